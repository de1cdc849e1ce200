package activities

import (
	"fmt"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/run"
)

// A poison request is one that crashes the engine whenever it runs: a prompt that
// trips a bug in a kernel, a tokenizer, a structured-output grammar. Retrying its
// chunk as it was would crash the engine on every attempt and fail the whole chunk,
// so the attempts of a chunk whose engine died narrow the culprit down:
//
//   - An attempt whose engine dies records the chunk's requests that were in flight
//     (run.EngineDeath) and whether it had the engine to itself (Alone).
//   - The next attempt feeds the requests that were never in flight at a death
//     first, as usual, together with other chunks' requests.
//   - The requests of a shared death (other chunks' requests were in the engine
//     too, so the culprit may not even be in this chunk) then run as one group with
//     the engine to themselves. A group that finishes clears them all at once: an
//     innocent chunk pays one exclusive pass, not one request at a time.
//   - The requests of an exclusive death (the culprit is surely among them) run one
//     at a time, with the engine to themselves.
//   - A request that was in flight at two deaths, at least one of them alone in the
//     engine, killed it: it is recorded as engine_error and never fed again, and the
//     deaths it explains no longer hold the others under suspicion.
//
// So a request is blamed only for a death it was alone in the engine for: an
// innocent request in flight with the poison one is never blamed (unless an
// unrelated crash hits it again while it runs alone). A poison request costs its
// chunk three engine deaths (shared, group, alone) and a fourth attempt to finish,
// which fits the default max_attempts of 5.

// feed is how one attempt feeds its requests to the engine, in this order.
type feed struct {
	blamed []batchfile.Request // recorded as engine_error, never fed
	normal []batchfile.Request // together, sharing the engine with other chunks
	group  []batchfile.Request // together, with the engine to themselves
	solo   []batchfile.Request // one at a time, with the engine to themselves
	// strikes counts, per blamed request, the deaths it was in flight for.
	strikes map[string]int
}

// planFeed sorts the requests an attempt still has to answer by what the chunk's
// recorded engine deaths say about them.
func planFeed(todo []batchfile.Request, deaths []run.EngineDeath) feed {
	strikes := map[string]int{}
	aloneDeath := map[string]bool{}
	for _, d := range deaths {
		for _, id := range d.InFlight {
			strikes[id]++
		}
		if d.Alone && len(d.InFlight) == 1 {
			aloneDeath[d.InFlight[0]] = true
		}
	}
	blamed := map[string]bool{}
	for id, n := range strikes {
		if n >= 2 && aloneDeath[id] {
			blamed[id] = true
		}
	}
	group, solo := map[string]bool{}, map[string]bool{}
	for _, d := range deaths {
		explained := false
		for _, id := range d.InFlight {
			explained = explained || blamed[id]
		}
		if explained {
			continue
		}
		for _, id := range d.InFlight {
			if d.Alone {
				solo[id] = true
			} else {
				group[id] = true
			}
		}
	}
	f := feed{strikes: map[string]int{}}
	for _, r := range todo {
		switch id := r.CustomID; {
		case blamed[id]:
			f.blamed = append(f.blamed, r)
			f.strikes[id] = strikes[id]
		case solo[id]:
			f.solo = append(f.solo, r)
		case group[id]:
			f.group = append(f.group, r)
		default:
			f.normal = append(f.normal, r)
		}
	}
	return f
}

// blameMessage is the engine_error message of a blamed request.
func blameMessage(strikes int) string {
	return fmt.Sprintf("the engine died %d times while this request was running, once with no other request "+
		"in the engine: it is taken to crash the engine and was not run again", strikes)
}
