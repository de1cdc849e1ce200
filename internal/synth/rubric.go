package synth

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// systemPrompt is the rubric shared by every line. Its bytes never vary, so an
// engine with prefix caching computes it once: the workload exercises the cache as
// the seed's did.
const systemPrompt = `You are an experienced technical recruiter screening candidates for software engineering roles. Evaluate the resume in the user's message against this rubric, judging only from what the resume says.

1. educational_pedigree: Great = a top-tier research university (MIT, Stanford, Carnegie Mellon, Berkeley) in a technical field; Good = a strong university or a technical degree; Okay = a non-technical degree or a bootcamp; Poor = no degree or training.
2. company_pedigree: Great = elite technology or quantitative firms; Good = established technology companies or funded startups; Okay = smaller or non-technology companies; Poor = no relevant employers.
3. trajectory: Great = fast promotions and growing scope; Good = steady progress; Okay = flat or lateral moves; Poor = regressions, long gaps or many short tenures.
4. is_software_engineer: true when the recent roles are hands-on software engineering (writing and shipping production code), else false.

Give each rating one or two sentences of reasoning that cite the resume. Then recommend Strong Yes, Yes, Maybe, No or Strong No, with two or three sentences of overall reasoning.

Answer with one JSON object and nothing else:
{"recommendation": "...", "reasoning": "...", "analysis": {"educational_pedigree": {"rating": "Great|Good|Okay|Poor", "reasoning": "..."}, "company_pedigree": {"rating": "...", "reasoning": "..."}, "trajectory": {"rating": "...", "reasoning": "..."}, "is_software_engineer": {"value": true, "reasoning": "..."}}}`

// The values an evaluation may take, as the rubric names them.
var (
	recommendations = []string{"Strong Yes", "Yes", "Maybe", "No", "Strong No"}
	ratings         = []string{"Great", "Good", "Okay", "Poor"}
)

// evaluationSchemaSource is the schema of the answer, in the seed's field order:
// structured outputs generate properties in schema order, so the answer reads
// like the seed's sample. Strict mode wants every property required and no others.
const evaluationSchemaSource = `{
  "type": "object",
  "properties": {
    "recommendation": {"type": "string", "enum": %[1]s},
    "reasoning": {"type": "string"},
    "analysis": {
      "type": "object",
      "properties": {
        "educational_pedigree": %[2]s,
        "company_pedigree": %[2]s,
        "trajectory": %[2]s,
        "is_software_engineer": {
          "type": "object",
          "properties": {"value": {"type": "boolean"}, "reasoning": {"type": "string"}},
          "required": ["value", "reasoning"],
          "additionalProperties": false
        }
      },
      "required": ["educational_pedigree", "company_pedigree", "trajectory", "is_software_engineer"],
      "additionalProperties": false
    }
  },
  "required": ["recommendation", "reasoning", "analysis"],
  "additionalProperties": false
}`

const ratingSchemaSource = `{
  "type": "object",
  "properties": {"rating": {"type": "string", "enum": %s}, "reasoning": {"type": "string"}},
  "required": ["rating", "reasoning"],
  "additionalProperties": false
}`

var evaluationSchema = buildSchema()

func buildSchema() json.RawMessage {
	recs, err := json.Marshal(recommendations)
	if err != nil {
		panic(err)
	}
	rates, err := json.Marshal(ratings)
	if err != nil {
		panic(err)
	}
	src := fmt.Sprintf(evaluationSchemaSource, recs, fmt.Sprintf(ratingSchemaSource, rates))
	var out bytes.Buffer
	if err := json.Compact(&out, []byte(src)); err != nil {
		panic(fmt.Sprintf("synth: evaluation schema is not JSON: %v", err)) // fixed text: caught by the tests
	}
	return out.Bytes()
}

// EvaluationSchema is the JSON schema of the evaluation object that every line
// asks for (compact JSON; the caller owns the copy).
func EvaluationSchema() json.RawMessage {
	return bytes.Clone(evaluationSchema)
}
