package api_test

import (
	"testing"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// TestEveryStateHasAWord: a state added to the API without a word here
// would show as "unknown" everywhere.
func TestEveryStateHasAWord(t *testing.T) {
	seen := map[string]bool{}
	for n := range nixmoxv1.StepState_name {
		w := api.StepWord(nixmoxv1.StepState(n))
		if (w == "unknown") != (n == 0) || seen[w] {
			t.Errorf("step state %s is %q", nixmoxv1.StepState(n), w)
		}
		seen[w] = true
	}
	seen = map[string]bool{}
	for n := range nixmoxv1.Health_name {
		w := api.HealthWord(nixmoxv1.Health(n))
		if (w == "unknown") != (n == 0) || seen[w] {
			t.Errorf("health %s is %q", nixmoxv1.Health(n), w)
		}
		seen[w] = true
	}
}
