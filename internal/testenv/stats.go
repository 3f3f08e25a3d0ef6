package testenv

import (
	"fmt"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (nearest rank) of d; 0 for none.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

// Median returns the middle value of v (the upper one of an even count),
// leaving v as it was; v must not be empty.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Millis formats d as milliseconds with one decimal, for benchmark tables.
func Millis(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
