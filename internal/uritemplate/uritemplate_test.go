package uritemplate

import "testing"

func TestFixedPrefixIsTheFolderNoFieldChanges(t *testing.T) {
	for tmpl, want := range map[string]string{
		"s3://b/scores/{{.Date}}/":                        "s3://b/scores",
		"s3://b/scores/{{.Date}}":                         "s3://b/scores",
		"s3://b/scores/night-{{.Date}}/":                  "s3://b/scores",
		`s3://b/x/{{.Time.Format "2006/01/02"}}/in.jsonl`: "s3://b/x",
		"file:///data/{{.Schedule}}/{{.Date}}/":           "file:///data",
	} {
		if got := FixedPrefix(tmpl); got != want {
			t.Errorf("FixedPrefix(%q) = %q, want %q", tmpl, got, want)
		}
	}
}
