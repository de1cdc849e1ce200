package batchfile

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var appendSeeds = []string{"", "plain", `quote " back \ slash`, "<b>html</b> & more", "\b\f\n\r\t\x00\x01\x1f\x7f",
	"é 日本 😀", "\u2028 \u2029 \u2027 \u202a", "bad \xff \xc3 utf-8 \xed\xa0\x80 \xf4\x90\x80\x80", "\xe6\x97"}

// AppendSuccess writes what json.Marshal writes of Success's line, for both kinds.
func FuzzAppendSuccessIsJSONMarshal(f *testing.F) {
	for _, s := range appendSeeds {
		f.Add(s, s, int64(1700000000), 7)
	}
	f.Fuzz(func(t *testing.T, text, customID string, created int64, tokens int) {
		for _, kind := range []Kind{KindChat, KindCompletion} {
			for _, total := range []int{0, 3 * tokens} {
				a := Answer{Kind: kind, Model: "org/" + customID, Created: created, Text: text, FinishReason: "length",
					Usage: Usage{PromptTokens: tokens, CompletionTokens: 2 * tokens, TotalTokens: total, CachedTokens: tokens / 2}}
				want, err := json.Marshal(Success("vb-r-1", customID, "vb-r-"+customID, a))
				require.NoError(t, err)
				assert.Equal(t, string(want)+"\n", string(AppendSuccess(nil, "vb-r-1", customID, "vb-r-"+customID, a)))
			}
		}
	})
}

// AppendSuccessTextJSON writes what AppendSuccess writes of the text that
// encoding/json decodes from the literal, for any literal it accepts: as
// json.Marshal writes it (the checkpointer's parts), and any other escaping.
func FuzzAppendSuccessTextJSONIsAppendSuccess(f *testing.F) {
	for _, s := range appendSeeds {
		f.Add(s)
	}
	for _, s := range []string{`\u003c\u2028\/\ud83d\ude00 \ud83d \ude00x \udfff\ud800 \u00e9\u0000\u001F`, "raw < > & \u2028 \u2029 \x7f",
		`\"\\\b\f\n\r\t`, `\uD83D\uDE00\uDBFF\uDFFF\uFFFD`, "\xef\xbf\xbd \xed\xa0\x80", `\ud800\u0041`, `\ud800\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(lit []byte) {
			var text string
			if json.Unmarshal(lit, &text) != nil {
				return // not a literal encoding/json accepts
			}
			for _, kind := range []Kind{KindChat, KindCompletion} {
				a := Answer{Kind: kind, Model: "org/m", Created: 1700000000, FinishReason: "stop", Usage: Usage{PromptTokens: 3}}
				want := AppendSuccess(nil, "vb-r-1", "c", "vb-r-1", Answer{Kind: a.Kind, Model: a.Model, Created: a.Created,
					Text: text, FinishReason: a.FinishReason, Usage: a.Usage})
				a.Text = "ignored"
				assert.Equal(t, string(want), string(AppendSuccessTextJSON(nil, "vb-r-1", "c", "vb-r-1", a, lit)), "literal %q", lit)
			}
		}
		marshalled, err := json.Marshal(s)
		require.NoError(t, err)
		check(marshalled)            // as the checkpointer writes it
		check([]byte(`"` + s + `"`)) // s itself as the literal's content, escapes and all
		var noHTML bytes.Buffer
		enc := json.NewEncoder(&noHTML)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(s))
		check(bytes.TrimSuffix(noHTML.Bytes(), []byte("\n")))
	})
}

// A text that is not a string (null) is empty, as encoding/json decodes it.
func TestAppendSuccessTextJSONNullIsEmpty(t *testing.T) {
	a := Answer{Kind: KindChat, Model: "m", FinishReason: "stop"}
	assert.Equal(t, string(AppendSuccess(nil, "i", "c", "i", a)), string(AppendSuccessTextJSON(nil, "i", "c", "i", a, []byte("null"))))
}
