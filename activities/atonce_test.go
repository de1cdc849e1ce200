package activities

import "sync/atomic"

// atOnce counts the calls under way and the most there were at once, for test
// stores that check how many reads or writes an activity makes together.
type atOnce struct{ now, most atomic.Int32 }

// enter counts a call in; leave counts it out.
func (a *atOnce) enter() (leave func()) {
	n := a.now.Add(1)
	for m := a.most.Load(); n > m && !a.most.CompareAndSwap(m, n); m = a.most.Load() {
	}
	return func() { a.now.Add(-1) }
}
