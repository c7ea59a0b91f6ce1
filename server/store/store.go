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
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"

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
	keyStateID         = []byte("state_id")
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

// Open opens (creating if needed) the state file at path, owner-only,
// checks its consistency (a damaged file is a *DamagedError, never a
// panic) and migrates it to SchemaVersion.
func Open(path string) (*Store, error) {
	db, err := openChecked(path)
	if err != nil {
		return nil, err
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
			if v, err = schemaOf(raw); err != nil {
				return err
			}
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w (schema %d; this one reads up to %d)", ErrNewerSchema, v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrating schema %d to %d: %w", v, v+1, err)
			}
		}
		if meta.Get(keyStateID) == nil {
			if err := meta.Put(keyStateID, newStateID()); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, u64(v))
	})
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Check runs bbolt's consistency check over the whole file (bounded by
// CheckTimeout; a panic on a damaged page is an error).
func (s *Store) Check() error { return check(s.db) }

// Schema returns the file's schema version.
func (s *Store) Schema() (v uint64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("the state file has no meta bucket")
		}
		v, err = schemaOf(meta.Get(keySchema))
		return err
	})
	return v, err
}

// schemaOf decodes a stored schema version: 8 bytes, big-endian; anything
// else is a damaged file, said so rather than read past its end.
func schemaOf(raw []byte) (uint64, error) {
	if len(raw) != 8 {
		return 0, fmt.Errorf("the schema version is %d bytes, not 8: the state file is damaged", len(raw))
	}
	return binary.BigEndian.Uint64(raw), nil
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
