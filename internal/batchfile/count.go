package batchfile

import (
	"bufio"
	"bytes"
	"io"
)

// CountLines returns the number of lines of r that a Reader gives an outcome for:
// the lines holding more than JSON whitespace, a leading byte order mark dropped.
// It reads r once through a fixed buffer and parses nothing, so it is as cheap as
// reading the bytes, whatever the lines are like.
func CountLines(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	b, err := br.Peek(3)
	if bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		_, err = br.Discard(3)
	}
	if err != nil && err != io.EOF {
		return 0, err
	}
	n := 0
	blank := true // the current line has held only whitespace so far
	for {
		chunk, err := br.ReadSlice('\n')
		if blank && !onlySpace(chunk) {
			blank = false
		}
		switch {
		case err == nil:
			if !blank {
				n++
			}
			blank = true
		case err == bufio.ErrBufferFull:
			// A line longer than the buffer: its next part follows.
		case err == io.EOF:
			if !blank {
				n++ // the last line has no line ending
			}
			return n, nil
		default:
			return n, err
		}
	}
}
