package render

import (
	"encoding/json"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
)

// JSON is the stable JSON form of a leak report (leaks --json, report
// --json): the analysis's facts, with the verdicts, reasons and advice in
// the words the text report uses. Each text follows the facts it explains.
func JSON(rep *analysis.LeakReport) []byte {
	b, err := json.Marshal(leakReportJSON{
		Time: rep.Time, Threshold: rep.Threshold,
		Processes: mapSlice(rep.Processes, func(p *analysis.ProcessLeak) processJSON { return processJSON{p, Verdict(p), Advice(p)} }),
		Young:     rep.Young,
		Stuck:     mapSlice(rep.Stuck, func(s *analysis.StuckSocket) stuckJSON { return stuckJSON{s, StuckWhy(s)} }),
		TimeWait:  timeWaitJSON{&rep.TimeWait, TimeWaitWarnings(&rep.TimeWait), TimeWaitAdvice(&rep.TimeWait)},
		Resets:    mapSlice(rep.Resets, func(r *analysis.ResetClose) resetJSON { return resetJSON{r, ResetWhy(r)} }),
		BindFailures: mapSlice(rep.BindFailures, func(f *analysis.BindFailure) bindFailureJSON {
			return bindFailureJSON{f, BindWhy(f)}
		}),
		PortExhaustions: mapSlice(rep.PortExhaustions, func(p *analysis.PortExhaustion) portExhaustionJSON {
			return portExhaustionJSON{p, PortExhaustionWhy(p)}
		}),
		OriginsSkipped: rep.OriginsSkipped, Limits: rep.Limits,
	})
	if err != nil {
		panic(err) // only plain data, and marshalers that do not fail
	}
	return b
}

// leakReportJSON names the report's fields; its parts embed the analysis's
// types, whose tags name theirs, and add their texts after them.
type leakReportJSON struct {
	Time            time.Time            `json:"time"`
	Threshold       time.Duration        `json:"threshold_ns"`
	Processes       []processJSON        `json:"processes"`
	Young           int                  `json:"young_close_wait"`
	Stuck           []stuckJSON          `json:"stuck"`
	TimeWait        timeWaitJSON         `json:"time_wait"`
	Resets          []resetJSON          `json:"resets"`
	BindFailures    []bindFailureJSON    `json:"bind_failures"`
	PortExhaustions []portExhaustionJSON `json:"port_exhaustions"`
	OriginsSkipped  uint64               `json:"origins_skipped,omitempty"`
	Limits          []string             `json:"limits,omitempty"`
}

type portExhaustionJSON struct {
	*analysis.PortExhaustion
	Why string `json:"why"`
}

type processJSON struct {
	*analysis.ProcessLeak
	Verdict string `json:"verdict"`
	Advice  string `json:"advice"`
}

type stuckJSON struct {
	*analysis.StuckSocket
	Why string `json:"why"`
}

type timeWaitJSON struct {
	*analysis.TimeWaitReport
	Warnings []string `json:"warnings"`
	Advice   []string `json:"advice"`
}

type resetJSON struct {
	*analysis.ResetClose
	Why string `json:"why"`
}

type bindFailureJSON struct {
	*analysis.BindFailure
	Why string `json:"why"`
}

// mapSlice is f of each element of in; nil for nil, so that JSON keeps null.
func mapSlice[T, U any](in []T, f func(*T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i := range in {
		out[i] = f(&in[i])
	}
	return out
}
