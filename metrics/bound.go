package metrics

// Other is the label value under which series past the bound are summed.
const Other = "other"

// DefaultTop is how many processes, destinations or bind failures get
// series of their own unless --metrics-top says otherwise.
const DefaultTop = 20

// ranking counts by key and keeps the keys in order of count, so that the
// top n are read in O(n) however many keys there are: each count is a bucket,
// the buckets a list from the highest count down, and a key moves to the next
// bucket up or down with each change. Keys of equal count stay in the order
// they reached it, so that the same keys are shown at every scrape.
type ranking[K comparable] struct {
	items     map[K]*rankItem[K]
	high, low *bucket[K]
	total     int
}

type bucket[K comparable] struct {
	count       int
	first, last *rankItem[K]
	up, down    *bucket[K] // the next higher and lower counts
}

type rankItem[K comparable] struct {
	key        K
	b          *bucket[K]
	prev, next *rankItem[K]
}

func newRanking[K comparable]() ranking[K] { return ranking[K]{items: map[K]*rankItem[K]{}} }

// add adds d, 1 or -1, to k's count; a key whose count falls to 0 is dropped.
func (r *ranking[K]) add(k K, d int) {
	r.total += d
	it := r.items[k]
	if it == nil {
		it = &rankItem[K]{key: k}
		r.items[k] = it
	}
	from, count := it.b, d
	if from != nil {
		count += from.count
		r.unlink(it)
	}
	if count <= 0 {
		delete(r.items, k)
		if from != nil && from.first == nil {
			r.remove(from)
		}
		return
	}
	to := r.bucketAt(count, from)
	if from != nil && from.first == nil {
		r.remove(from)
	}
	it.b, it.prev = to, to.last
	if to.last != nil {
		to.last.next = it
	} else {
		to.first = it
	}
	to.last = it
}

// bucketAt is the bucket of count, next to from (nil: at the bottom), made
// if need be.
func (r *ranking[K]) bucketAt(count int, from *bucket[K]) *bucket[K] {
	var up, down *bucket[K] // the neighbours count goes between
	switch {
	case from == nil:
		up = r.low
	case count > from.count:
		up, down = from.up, from
	default:
		up, down = from, from.down
	}
	if up != nil && up.count == count {
		return up
	}
	if down != nil && down.count == count {
		return down
	}
	b := &bucket[K]{count: count, up: up, down: down}
	if up != nil {
		up.down = b
	} else {
		r.high = b
	}
	if down != nil {
		down.up = b
	} else {
		r.low = b
	}
	return b
}

func (r *ranking[K]) unlink(it *rankItem[K]) {
	b := it.b
	if it.prev != nil {
		it.prev.next = it.next
	} else {
		b.first = it.next
	}
	if it.next != nil {
		it.next.prev = it.prev
	} else {
		b.last = it.prev
	}
	it.b, it.prev, it.next = nil, nil, nil
}

func (r *ranking[K]) remove(b *bucket[K]) {
	if b.up != nil {
		b.up.down = b.down
	} else {
		r.high = b.down
	}
	if b.down != nil {
		b.down.up = b.up
	} else {
		r.low = b.up
	}
}

// top calls fn for the n keys of highest count, highest first, and returns
// the sum of their counts.
func (r *ranking[K]) top(n int, fn func(k K, count int)) (sum int) {
	for b := r.high; b != nil && n > 0; b = b.down {
		for it := b.first; it != nil && n > 0; it, n = it.next, n-1 {
			fn(it.key, b.count)
			sum += b.count
		}
	}
	return sum
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
