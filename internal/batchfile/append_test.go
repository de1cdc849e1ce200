package batchfile

import (
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
