package server

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"
)

// Limits of what an unauthenticated caller (Enroll) may send and how
// often. Documented in docs/deploy.md.
const (
	// MaxTokenBytes, MaxServiceBytes and MaxCSRBytes bound an enrollment
	// request's fields; a larger one is refused before anything is read
	// from or written to the state.
	MaxTokenBytes   = 128
	MaxServiceBytes = 63
	MaxCSRBytes     = 8 << 10
	// EnrollRate and EnrollBurst bound enrollment attempts per peer
	// address.
	EnrollRate  = rate.Limit(2)
	EnrollBurst = 10
	// maxPeers bounds the per-peer limiters kept.
	maxPeers = 4096
	// refusalLogEvery is how often, at most, refused attempts are logged
	// and audited (with the count since the last line).
	refusalLogEvery = 10 * time.Second
)

// peerLimits rate-limits callers by their address.
type peerLimits struct {
	mu    sync.Mutex
	peers map[string]*peerLimit
}

type peerLimit struct {
	lim  *rate.Limiter
	seen time.Time
}

// allow reports whether the caller of ctx may make another attempt now.
func (p *peerLimits) allow(ctx context.Context, now time.Time) bool {
	key := "unknown"
	if pr, ok := peer.FromContext(ctx); ok {
		if host, _, err := net.SplitHostPort(pr.Addr.String()); err == nil {
			key = host
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers == nil {
		p.peers = map[string]*peerLimit{}
	}
	l := p.peers[key]
	if l == nil {
		if len(p.peers) >= maxPeers {
			p.evict(now)
		}
		l = &peerLimit{lim: rate.NewLimiter(EnrollRate, EnrollBurst)}
		p.peers[key] = l
	}
	l.seen = now
	return l.lim.AllowN(now, 1)
}

// evict forgets the peers not seen for a minute — their limiters are full
// again by then — or, if that frees nothing, all of them.
func (p *peerLimits) evict(now time.Time) {
	for k, l := range p.peers {
		if now.Sub(l.seen) > time.Minute {
			delete(p.peers, k)
		}
	}
	if len(p.peers) >= maxPeers {
		clear(p.peers)
	}
}

// sampler lets one report through per interval and counts the rest.
type sampler struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// take reports whether to report now, and how many were suppressed since
// the last report.
func (s *sampler) take(now time.Time, every time.Duration) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() && now.Sub(s.last) < every {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	return true, n
}
