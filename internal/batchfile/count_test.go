package batchfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCountLines(t *testing.T) {
	long := `{"custom_id":"long","prompt":"` + strings.Repeat("x", 200<<10) + `"}`
	for _, tc := range []struct {
		name, input string
		want        int
	}{
		{"empty", "", 0},
		{"only blank lines", "\n\r\n  \t\n", 0},
		{"one line, no ending", `{"custom_id":"a"}`, 1},
		{"blank lines between", "a\n\n b\n\t\nc\n", 3},
		{"CRLF, a lone trailing CR", "a\r\nb\r\n\r\nc\r", 3},
		{"byte order mark", "\xef\xbb\xbf\na\n", 1},
		{"byte order mark on a line", "\xef\xbb\xbfa\nb", 2},
		{"lines longer than the buffer", long + "\n" + strings.Repeat(" ", 100<<10) + "\n" + long, 2},
		{"bad lines count too", "not json\n[]\n{}\n", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CountLines(strings.NewReader(tc.input))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Len(t, readString(t, tc.input, Options{}), tc.want, "the Reader gives as many outcomes")
		})
	}
}

func TestCountLinesReadFailure(t *testing.T) {
	boom := errors.New("connection reset")
	_, err := CountLines(&failingReader{data: "a\nb\n", err: boom})
	require.ErrorIs(t, err, boom)
	_, err = CountLines(&failingReader{err: boom})
	require.ErrorIs(t, err, boom, "a failure before the first byte")
}
