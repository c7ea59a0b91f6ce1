// Package store is nixmox-server's state: a bbolt file holding manifest
// versions, rollouts and their steps, the audit log, step fingerprints,
// agent registrations, reported health and generations per service.
//
// Every change is one bbolt transaction, committed (and fsynced) before the
// call returns, so a caller that writes a transition before acting on it
// never acts on something the store does not know — not even after SIGKILL.
// Records are JSON, so `bbolt` tools and humans can read the file. The file
// is created 0600 and its schema is versioned: Open migrates an older file
// and refuses a newer one.
package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the schema this package reads and writes.
const SchemaVersion = 3

// Bucket names.
var (
	bucketMeta         = []byte("meta")
	bucketManifests    = []byte("manifests")
	bucketRollouts     = []byte("rollouts")
	bucketSteps        = []byte("steps")        // rollout id -> step id -> StepRecord
	bucketAudit        = []byte("audit")        // sequence -> AuditEntry
	bucketFingerprints = []byte("fingerprints") // step id -> fingerprint of its last success
	bucketAgents       = []byte("agents")
	bucketHealth       = []byte("health")      // service -> sequence -> HealthRecord
	bucketGenerations  = []byte("generations") // service -> generation -> Generation
	bucketTokens       = []byte("tokens")      // sha256(token) -> Token
	bucketOutputs      = []byte("outputs")     // Terraform root -> Outputs
	keySchema          = []byte("schema_version")
	keyLock            = []byte("rollout_lock")
)

// migrations[i] moves a file from schema version i to i+1.
var migrations = []func(tx *bolt.Tx) error{
	// 0 -> 1: the initial buckets.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketManifests, bucketRollouts, bucketSteps, bucketAudit,
			bucketFingerprints, bucketAgents, bucketHealth, bucketGenerations} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 -> 2: one-time enrollment tokens.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketTokens)
		return err
	},
	// 2 -> 3: Terraform outputs.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketOutputs)
		return err
	},
}

// ErrNewerSchema is returned for a file written by a newer nixmox.
var ErrNewerSchema = errors.New("the state file was written by a newer nixmox")

// ErrNotFound is returned for a record that does not exist.
var ErrNotFound = errors.New("not found")

// Store is an open state file. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the state file at path, owner-only, and
// migrates it to SchemaVersion.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	// A file created by hand or another tool may be wider: state holds
	// the audit log and generations, so it is the owner's alone.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := uint64(0)
		if raw := meta.Get(keySchema); raw != nil {
			v = binary.BigEndian.Uint64(raw)
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w (schema %d; this one reads up to %d)", ErrNewerSchema, v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrating schema %d to %d: %w", v, v+1, err)
			}
		}
		return meta.Put(keySchema, u64(v))
	})
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Check runs bbolt's consistency check over the whole file.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Schema returns the file's schema version.
func (s *Store) Schema() (v uint64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	return v, err
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// put JSON-encodes v under key in bucket b.
func put(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// get decodes the record under key into v.
func get(b *bolt.Bucket, key []byte, v any) error {
	raw := b.Get(key)
	if raw == nil {
		return ErrNotFound
	}
	return json.Unmarshal(raw, v)
}

// each decodes every record of b (none when b is nil) and hands it to fn
// with its key.
func each[T any](b *bolt.Bucket, fn func(key []byte, v T)) error {
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		fn(k, v)
		return nil
	})
}

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
func (s *Store) Audit(e AuditEntry) (uint64, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		var err error
		if e.Seq, err = b.NextSequence(); err != nil {
			return err
		}
		e.Time = e.Time.UTC()
		return put(b, u64(e.Seq), e)
	})
	return e.Seq, err
}

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

// Generation is one generation of a service: a closure the server built.
type Generation struct {
	Number    int64     `json:"number"`
	StorePath string    `json:"store_path"`
	Created   time.Time `json:"created"`
	Healthy   bool      `json:"healthy"`
}

// PutGeneration records a service's generation (new or updated).
func (s *Store) PutGeneration(service string, g Generation) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketGenerations).CreateBucketIfNotExists([]byte(service))
		if err != nil {
			return err
		}
		return put(b, u64(uint64(g.Number)), g)
	})
}

// Generations returns a service's generations, oldest first.
func (s *Store) Generations(service string) ([]Generation, error) {
	var out []Generation
	err := s.db.View(func(tx *bolt.Tx) error {
		return each(tx.Bucket(bucketGenerations).Bucket([]byte(service)), func(_ []byte, g Generation) { out = append(out, g) })
	})
	return out, err
}

// Agent is an enrolled agent.
type Agent struct {
	Service    string    `json:"service"`
	Enrolled   time.Time `json:"enrolled"`
	CertSerial string    `json:"cert_serial"`
}

// PutAgent records an enrolled agent.
func (s *Store) PutAgent(a Agent) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx.Bucket(bucketAgents), []byte(a.Service), a) })
}

// Agent returns the agent of a service.
func (s *Store) Agent(service string) (a Agent, err error) {
	err = s.db.View(func(tx *bolt.Tx) error { return get(tx.Bucket(bucketAgents), []byte(service), &a) })
	return a, err
}

// Agents returns every enrolled agent, by service name.
func (s *Store) Agents() ([]Agent, error) {
	var out []Agent
	err := s.db.View(func(tx *bolt.Tx) error {
		return each(tx.Bucket(bucketAgents), func(_ []byte, a Agent) { out = append(out, a) })
	})
	return out, err
}

// HealthRecord is one reported health transition.
type HealthRecord struct {
	Time   time.Time `json:"time"`
	Check  string    `json:"check"`
	Health string    `json:"health"`
	Output string    `json:"output,omitempty"`
}

// AddHealth appends a service's health report.
func (s *Store) AddHealth(service string, h HealthRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketHealth).CreateBucketIfNotExists([]byte(service))
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		h.Time = h.Time.UTC()
		return put(b, u64(seq), h)
	})
}

// Health returns a service's last n health reports, oldest first.
func (s *Store) Health(service string, n int) ([]HealthRecord, error) {
	var out []HealthRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHealth).Bucket([]byte(service))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			var h HealthRecord
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			out = append([]HealthRecord{h}, out...)
		}
		return nil
	})
	return out, err
}

// Token is a one-time enrollment token, stored by its SHA-256 only.
type Token struct {
	Service string    `json:"service"`
	Expires time.Time `json:"expires"`
}

func tokenKey(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// PutToken records a one-time enrollment token for a service. Only its hash
// is stored: the state file never holds a usable token.
func (s *Store) PutToken(token, service string, expires time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return put(tx.Bucket(bucketTokens), tokenKey(token), Token{Service: service, Expires: expires.UTC()})
	})
}

// ErrBadToken is an unknown, used or expired enrollment token.
var ErrBadToken = errors.New("unknown, used or expired enrollment token")

// UseToken consumes a token and returns the service it was issued for. A
// token works once: it is deleted in the same transaction, expired or not.
func (s *Store) UseToken(token string, now time.Time) (service string, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		var t Token
		if err := get(b, tokenKey(token), &t); err != nil {
			return ErrBadToken
		}
		if err := b.Delete(tokenKey(token)); err != nil {
			return err
		}
		if now.After(t.Expires) {
			return ErrBadToken
		}
		service = t.Service
		return nil
	})
	return service, err
}

// Output is one Terraform output as stored: a plain value as JSON, or a
// sensitive one only sealed (encrypted by the server's secrets key).
type Output struct {
	Name      string          `json:"name"`
	Sensitive bool            `json:"sensitive,omitempty"`
	Value     json.RawMessage `json:"value,omitempty"`
	Sealed    []byte          `json:"sealed,omitempty"`
}

// Outputs is what a Terraform root output at its last apply.
type Outputs struct {
	Root    string    `json:"root"`
	Applied time.Time `json:"applied"`
	Outputs []Output  `json:"outputs"`
}

// PutOutputs records a root's outputs, replacing the previous ones. A
// sensitive output with a plain value is refused: it must be sealed first.
func (s *Store) PutOutputs(o Outputs) error {
	for _, out := range o.Outputs {
		if out.Sensitive && len(out.Value) > 0 {
			return fmt.Errorf("output %s of %s is sensitive and must be sealed before it is stored", out.Name, o.Root)
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx.Bucket(bucketOutputs), []byte(o.Root), o) })
}

// RootOutputs returns a root's outputs (none if it never applied).
func (s *Store) RootOutputs(root string) (o Outputs, err error) {
	err = s.db.View(func(tx *bolt.Tx) error { return get(tx.Bucket(bucketOutputs), []byte(root), &o) })
	if errors.Is(err, ErrNotFound) {
		return Outputs{Root: root}, nil
	}
	return o, err
}

// AllOutputs returns every root's outputs, by root.
func (s *Store) AllOutputs() ([]Outputs, error) {
	var out []Outputs
	err := s.db.View(func(tx *bolt.Tx) error {
		return each(tx.Bucket(bucketOutputs), func(_ []byte, o Outputs) { out = append(out, o) })
	})
	return out, err
}
