package store

// SetAuditKeep sets how many audit entries are kept, until the test ends.
func SetAuditKeep(n uint64) (restore func()) {
	old := auditKeep
	auditKeep = n
	return func() { auditKeep = old }
}
