package metrics

import "sort"

// Other is the label value under which series past the bound are summed.
const Other = "other"

// DefaultTop is how many processes, destinations or bind failures get
// series of their own unless --metrics-top says otherwise.
const DefaultTop = 20

// topN sorts items, first before later as first says, and splits them into
// the n first and the rest.
func topN[T any](items []T, n int, first func(a, b T) bool) (top, rest []T) {
	sorted := append([]T(nil), items...)
	sort.SliceStable(sorted, func(i, j int) bool { return first(sorted[i], sorted[j]) })
	if len(sorted) <= n {
		return sorted, nil
	}
	return sorted[:n], sorted[n:]
}

// firstN counts by key with a bound on the keys: the first n distinct keys
// get counts of their own, every later key adds to a shared one. A key never
// moves between the two, so each count only grows, as a counter must.
type firstN[K comparable] struct {
	n      int
	counts map[K]uint64
	other  uint64
}

func newFirstN[K comparable](n int) firstN[K] {
	return firstN[K]{n: n, counts: make(map[K]uint64)}
}

func (f *firstN[K]) add(k K) {
	if _, ok := f.counts[k]; ok || len(f.counts) < f.n {
		f.counts[k]++
		return
	}
	f.other++
}

// clone copies the counts, for a snapshot.
func (f *firstN[K]) clone() firstN[K] {
	c := firstN[K]{n: f.n, counts: make(map[K]uint64, len(f.counts)), other: f.other}
	for k, v := range f.counts {
		c.counts[k] = v
	}
	return c
}
