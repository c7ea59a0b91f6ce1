package manifest

import (
	"fmt"

	"github.com/hbollon/go-edlib"
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
// Distance is optimal-string-alignment Damerau-Levenshtein, so a swapped
// pair of letters ("wbe" for "web") is one edit. The allowed distance grows
// with the length of the word: one edit up to three letters, then one more
// every four letters.
func Closest(s string, candidates []string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	limit := 1 + len(s)/4
	best, bestDist := "", limit+1
	for _, c := range candidates {
		if d := edlib.OSADamerauLevenshteinDistance(s, c); d < bestDist && d > 0 {
			best, bestDist = c, d
		}
	}
	return best
}
