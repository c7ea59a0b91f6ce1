package agent

import "testing"

// BuildGeneration is closureFor, for the agent_test package's tests.
func BuildGeneration(t *testing.T, label, state string) string { return closureFor(t, label, state) }
