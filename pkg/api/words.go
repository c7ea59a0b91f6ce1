package api

import nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"

// The words below are how every surface — nixmox-cli's output, the status
// page, the metrics' labels — names health and step states, so that they
// agree.

// HealthWord is healthy, unhealthy, starting or unknown.
func HealthWord(h nixmoxv1.Health) string {
	switch h {
	case nixmoxv1.Health_HEALTH_HEALTHY:
		return "healthy"
	case nixmoxv1.Health_HEALTH_UNHEALTHY:
		return "unhealthy"
	case nixmoxv1.Health_HEALTH_STARTING:
		return "starting"
	}
	return "unknown"
}

// StepWord is a step's state: pending, running, succeeded, unchanged (a
// step skipped because nothing changed since it last succeeded), failed,
// held, rolled_back or unknown.
func StepWord(s nixmoxv1.StepState) string {
	switch s {
	case nixmoxv1.StepState_STEP_STATE_PENDING:
		return "pending"
	case nixmoxv1.StepState_STEP_STATE_RUNNING:
		return "running"
	case nixmoxv1.StepState_STEP_STATE_SUCCEEDED:
		return "succeeded"
	case nixmoxv1.StepState_STEP_STATE_SKIPPED:
		return "unchanged"
	case nixmoxv1.StepState_STEP_STATE_FAILED:
		return "failed"
	case nixmoxv1.StepState_STEP_STATE_HELD:
		return "held"
	case nixmoxv1.StepState_STEP_STATE_ROLLED_BACK:
		return "rolled_back"
	}
	return "unknown"
}
