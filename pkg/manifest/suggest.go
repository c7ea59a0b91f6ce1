package manifest

import (
	"fmt"

	"github.com/agnivade/levenshtein"
)

// didYouMean returns `; did you mean "x"?` for the candidate closest to s, or
// "" when none is close enough to be a plausible typo.
func didYouMean(s string, candidates []string) string {
	if best := Closest(s, candidates); best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return ""
}

// Closest returns the candidate within a typo's distance of s, or "".
// The allowed distance grows with the length of the word: one edit for short
// names, up to a third of the length for long ones.
func Closest(s string, candidates []string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	limit := max(1, len(s)/3)
	best, bestDist := "", limit+1
	for _, c := range candidates {
		if d := levenshtein.ComputeDistance(s, c); d < bestDist && d > 0 {
			best, bestDist = c, d
		}
	}
	return best
}
