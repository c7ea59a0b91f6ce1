package store

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

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
