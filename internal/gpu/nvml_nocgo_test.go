//go:build !cgo

package gpu

import (
	"errors"
	"strings"
	"testing"
)

func TestDiscoverWithoutCgo(t *testing.T) {
	devs, err := Discover()
	var u *Unavailable
	if !errors.As(err, &u) || !strings.Contains(u.Reason, "without cgo") {
		t.Fatalf("Discover in a build without cgo = %v, %v; want *Unavailable naming cgo", devs, err)
	}
}
