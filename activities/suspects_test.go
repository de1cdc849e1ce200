package activities

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/run"
)

func ids(reqs []batchfile.Request) []string {
	out := []string{}
	for _, r := range reqs {
		out = append(out, r.CustomID)
	}
	return out
}

func TestPlanFeedBlamesOnlyARequestThatDiedAlone(t *testing.T) {
	todo := []batchfile.Request{{CustomID: "a"}, {CustomID: "b"}, {CustomID: "c"}, {CustomID: "d"}}
	cases := []struct {
		name                        string
		deaths                      []run.EngineDeath
		blamed, normal, group, solo []string
	}{
		{name: "no deaths", normal: []string{"a", "b", "c", "d"}},
		{name: "one shared death: its requests run as a group",
			deaths: []run.EngineDeath{{Attempt: 1, InFlight: []string{"b", "c"}}},
			normal: []string{"a", "d"}, group: []string{"b", "c"}},
		{name: "two shared deaths blame nobody",
			deaths: []run.EngineDeath{{Attempt: 1, InFlight: []string{"b", "c"}}, {Attempt: 2, InFlight: []string{"b", "c"}}},
			normal: []string{"a", "d"}, group: []string{"b", "c"}},
		{name: "an exclusive death: its requests run one at a time",
			deaths: []run.EngineDeath{{Attempt: 1, InFlight: []string{"b", "c"}}, {Attempt: 2, InFlight: []string{"b", "c"}, Alone: true}},
			normal: []string{"a", "d"}, solo: []string{"b", "c"}},
		{name: "dying alone a second time blames, and clears the others",
			deaths: []run.EngineDeath{{Attempt: 1, InFlight: []string{"b", "c", "d"}}, {Attempt: 2, InFlight: []string{"b", "c", "d"}, Alone: true},
				{Attempt: 3, InFlight: []string{"c"}, Alone: true}},
			blamed: []string{"c"}, normal: []string{"a", "b", "d"}},
		{name: "one death alone is not enough",
			deaths: []run.EngineDeath{{Attempt: 1, InFlight: []string{"d"}, Alone: true}},
			normal: []string{"a", "b", "c"}, solo: []string{"d"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := planFeed(todo, c.deaths)
			for _, want := range []struct {
				got, want []string
				what      string
			}{{ids(f.blamed), c.blamed, "blamed"}, {ids(f.normal), c.normal, "normal"}, {ids(f.group), c.group, "group"}, {ids(f.solo), c.solo, "solo"}} {
				if want.want == nil {
					want.want = []string{}
				}
				assert.Equal(t, want.want, want.got, want.what)
			}
		})
	}
}

func TestADeathRecordHoldsWhatASharedEngineSaysWasInAnEngine(t *testing.T) {
	f := &feeder{inFlight: map[string]batchfile.Request{}}
	for i, id := range []string{"a", "b", "c", "d"} {
		f.inFlight[id] = batchfile.Request{CustomID: id, Line: i + 1}
	}
	plain := f.death(7, 2, "w", 0, fmt.Errorf("call: %w", engine.ErrEngineDied))
	assert.Equal(t, []string{"a", "b", "c", "d"}, plain.InFlight, "an engine fed directly: every request of the call, in input order")
	assert.Equal(t, 0, plain.Slot)

	shared := f.death(7, 2, "w", 0, &EngineDiedError{Slot: 1, InFlight: []string{"d", "b"}, Err: engine.ErrEngineDied})
	assert.Equal(t, []string{"b", "d"}, shared.InFlight, "only the requests handed to an engine, in input order")
	assert.Equal(t, 1, shared.Slot, "the slot whose engine died")
	assert.Equal(t, 7, shared.Chunk)
}
