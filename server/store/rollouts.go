package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Manifest is one stored manifest version.
type Manifest struct {
	Version uint64          `json:"version"`
	File    string          `json:"file"`
	Stored  time.Time       `json:"stored"`
	JSON    json.RawMessage `json:"json"`
}

// PutManifest stores a new manifest version and returns its number (1, 2,
// ...).
func (s *Store) PutManifest(file string, manifestJSON []byte, now time.Time) (uint64, error) {
	var v uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketManifests)
		var err error
		if v, err = b.NextSequence(); err != nil {
			return err
		}
		return put(b, u64(v), Manifest{Version: v, File: file, Stored: now.UTC(), JSON: manifestJSON})
	})
	return v, err
}

// Manifest returns a stored manifest version; 0 means the latest.
func (s *Store) Manifest(version uint64) (m Manifest, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketManifests)
		if version == 0 {
			k, _ := b.Cursor().Last()
			if k == nil {
				return ErrNotFound
			}
			return get(b, k, &m)
		}
		return get(b, u64(version), &m)
	})
	return m, err
}

// Rollout is one run of a manifest version.
type Rollout struct {
	ID       string    `json:"id"`
	Manifest uint64    `json:"manifest"`
	Who      string    `json:"who"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	OK       bool      `json:"ok"`
	Summary  string    `json:"summary,omitempty"`
	// The apply's options, so that a restarted server can resume it.
	Services []string `json:"services,omitempty"`
	Parallel int      `json:"parallel,omitempty"`
	FailFast bool     `json:"fail_fast,omitempty"`
	Force    bool     `json:"force,omitempty"`
	// NoRollback leaves an unhealthy generation in place for debugging.
	NoRollback bool `json:"no_rollback,omitempty"`
}

// PutRollout creates or updates a rollout.
func (s *Store) PutRollout(r Rollout) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return put(tx.Bucket(bucketRollouts), []byte(r.ID), r)
	})
}

// Rollout returns a rollout by id.
func (s *Store) Rollout(id string) (r Rollout, err error) {
	err = s.db.View(func(tx *bolt.Tx) error { return get(tx.Bucket(bucketRollouts), []byte(id), &r) })
	return r, err
}

// Rollouts returns up to limit rollouts, newest first. Rollout ids sort by
// time (NewRolloutID), so this is a reverse scan.
func (s *Store) Rollouts(limit int) ([]Rollout, error) {
	var out []Rollout
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRollouts).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var r Rollout
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// NewRolloutID returns an id that sorts by time: the UTC time to the
// nanosecond.
func NewRolloutID(now time.Time) string {
	return now.UTC().Format("20060102T150405.000000000Z")
}

// StepRecord is the state of one step of a rollout, with its attempts.
type StepRecord struct {
	ID       string    `json:"id"`
	State    string    `json:"state"`
	Attempts int       `json:"attempts"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
	// Needs and Root are, for a held step, the step it needs that did not
	// succeed and the failed step at the root (rollout.Hold).
	Needs       string `json:"needs,omitempty"`
	Root        string `json:"root,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// PutStep records a step's state in a rollout. When the step succeeded (or
// was skipped as unchanged) with a fingerprint, the fingerprint is recorded in the same transaction, so a
// crash can never leave a success without its fingerprint or the other way
// round; a failure clears the fingerprint.
func (s *Store) PutStep(rolloutID string, st StepRecord) error {
	return s.PutSteps(rolloutID, []StepRecord{st})
}

// PutSteps records several steps' states in one transaction (one fsync),
// in order, with PutStep's fingerprint rules.
func (s *Store) PutSteps(rolloutID string, sts []StepRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		steps, err := tx.Bucket(bucketSteps).CreateBucketIfNotExists([]byte(rolloutID))
		if err != nil {
			return err
		}
		fps := tx.Bucket(bucketFingerprints)
		for _, st := range sts {
			if err := put(steps, []byte(st.ID), st); err != nil {
				return err
			}
			switch st.State {
			case "succeeded", "skipped":
				if st.Fingerprint != "" {
					err = fps.Put([]byte(st.ID), []byte(st.Fingerprint))
				}
			case "failed", "rolled_back":
				err = fps.Delete([]byte(st.ID))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// Steps returns a rollout's steps by id.
func (s *Store) Steps(rolloutID string) (map[string]StepRecord, error) {
	out := map[string]StepRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return each(tx.Bucket(bucketSteps).Bucket([]byte(rolloutID)), func(k []byte, st StepRecord) { out[string(k)] = st })
	})
	return out, err
}

// Fingerprint returns the fingerprint of a step's last success, or "".
func (s *Store) Fingerprint(stepID string) (fp string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		fp = string(tx.Bucket(bucketFingerprints).Get([]byte(stepID)))
		return nil
	})
	return fp, err
}

// AuditEntry is one line of the audit log: who did what, when, and how it
// ended.
type AuditEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Who     string    `json:"who"`
	What    string    `json:"what"`
	Result  string    `json:"result"`
	Rollout string    `json:"rollout,omitempty"`
}

// Audit appends an entry and returns its sequence number.
//
// The log keeps the AuditKeep newest entries: each append beyond them
// removes the oldest, so the log's size is bounded whoever writes to it.
func (s *Store) Audit(e AuditEntry) (uint64, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		var err error
		if e.Seq, err = b.NextSequence(); err != nil {
			return err
		}
		e.Time = e.Time.UTC()
		if e.Seq > auditKeep {
			if err := b.Delete(u64(e.Seq - auditKeep)); err != nil {
				return err
			}
		}
		return put(b, u64(e.Seq), e)
	})
	return e.Seq, err
}

// AuditKeep is how many audit entries are kept (the newest).
const AuditKeep = 20000

var auditKeep uint64 = AuditKeep // tests make it small

// AuditLog returns the entries after seq, oldest first.
func (s *Store) AuditLog(after uint64) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Lock takes the rollout lock for rolloutID; it fails, naming the holder,
// while another rollout holds it.
func (s *Store) Lock(rolloutID string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if holder := meta.Get(keyLock); holder != nil && string(holder) != rolloutID {
			return &LockedError{Holder: string(holder)}
		}
		return meta.Put(keyLock, []byte(rolloutID))
	})
}

// Unlock releases the lock if rolloutID holds it.
func (s *Store) Unlock(rolloutID string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if holder := meta.Get(keyLock); holder != nil && string(holder) != rolloutID {
			return &LockedError{Holder: string(holder)}
		}
		return meta.Delete(keyLock)
	})
}

// LockHolder returns the rollout holding the lock, or "".
func (s *Store) LockHolder() (id string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyLock))
		return nil
	})
	return id, err
}

// LockedError says which rollout holds the lock.
type LockedError struct{ Holder string }

func (e *LockedError) Error() string {
	return fmt.Sprintf("rollout %s is running; wait for it to finish or, if its server died, run nixmox-cli unlock %s", e.Holder, e.Holder)
}
