package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/pki"
	"github.com/nixmox/nixmox/server"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/store"
)

type fixture struct {
	api        *server.AgentAPI
	addr       string
	ca         *pki.CA
	st         *store.Store
	handshakes *handshakes
	path       string      // the state file
	log        *syncBuffer // the API's log
}

// syncBuffer is a log written by concurrent calls.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// handshakes wraps the server's transport credentials and keeps the error
// of every TLS handshake it refused: what the server itself decided, which
// a TLS 1.3 client may only see as a reset connection.
type handshakes struct {
	credentials.TransportCredentials
	mu     sync.Mutex
	errors []error
}

func (h *handshakes) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := h.TransportCredentials.ServerHandshake(c)
	if err != nil {
		h.mu.Lock()
		h.errors = append(h.errors, err)
		h.mu.Unlock()
	}
	return conn, info, err
}

func (h *handshakes) refused() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.errors)
}

// start runs the agent API on a loopback port over TLS: a client
// certificate is optional at the handshake (Enroll needs none) and checked
// by Connect.
func start(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreate(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cert, err := ca.ServerCert([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// The server's own agent-listener TLS.
	creds := &handshakes{TransportCredentials: credentials.NewTLS(server.AgentTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }, ca))}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	api := &server.AgentAPI{Store: st, CA: ca, Log: hclog.New(&hclog.LoggerOptions{Output: logBuf}), Hub: &agents.Hub{}}
	srv := grpc.NewServer(grpc.Creds(creds))
	nixmoxv1.RegisterAgentServiceServer(srv, api)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return &fixture{api: api, addr: lis.Addr().String(), ca: ca, st: st, handshakes: creds, path: filepath.Join(dir, "state.db"), log: logBuf}
}

// client dials the server trusting ca, presenting cert when given.
func (f *fixture) client(t *testing.T, ca *pki.CA, cert *tls.Certificate) nixmoxv1.AgentServiceClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return nixmoxv1.NewAgentServiceClient(conn)
}

// enroll enrolls an agent for service with token and returns its
// certificate.
func (f *fixture) enroll(t *testing.T, token, service string) (tls.Certificate, error) {
	t.Helper()
	keyPEM, csrPEM, err := pki.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.client(t, f.ca, nil).Enroll(context.Background(), &nixmoxv1.EnrollRequest{Token: token, Service: service, CsrPem: csrPEM})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(resp.GetCertificatePem(), keyPEM)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestEnrollmentTokens(t *testing.T) {
	f := start(t)
	exp := time.Now().Add(time.Hour)
	_ = f.st.PutToken("tok-dns", "dns", exp)
	_ = f.st.PutToken("tok-web", "web", exp)
	if _, err := f.enroll(t, "tok-dns", "dns"); err != nil {
		t.Fatalf("enrolling dns: %v", err)
	}
	for _, tc := range []struct{ token, service string }{
		{"tok-dns", "dns"}, // used
		{"tok-web", "dns"}, // another service's token (and now consumed)
		{"tok-web", "web"},
		{"guess", "web"},
	} {
		if _, err := f.enroll(t, tc.token, tc.service); status.Code(err) != codes.PermissionDenied {
			t.Errorf("enroll %s with %s: %v", tc.service, tc.token, err)
		}
	}
	// The enrollment is audited; the refusals too, one line per interval
	// (the first of them here), so that strangers cannot fill the log.
	log, _ := f.st.AuditLog(0)
	if len(log) != 2 || log[0].Result != "ok" || log[1].Result != "refused: token" || !strings.HasPrefix(log[1].What, "enroll from 127.0.0.1:") {
		t.Errorf("audit log %+v", log)
	}
}

// TestAgentsAreTheirCertificates: each agent reports and receives for its
// certificate's service only; without an enrolled certificate, or with one
// from another CA, there is no stream.
func TestAgentsAreTheirCertificates(t *testing.T) {
	f := start(t)
	exp := time.Now().Add(time.Hour)
	_ = f.st.PutToken("t1", "dns", exp)
	_ = f.st.PutToken("t2", "web", exp)
	dnsCert, err := f.enroll(t, "t1", "dns")
	if err != nil {
		t.Fatal(err)
	}
	webCert, err := f.enroll(t, "t2", "web")
	if err != nil {
		t.Fatal(err)
	}

	connect := func(cert tls.Certificate) nixmoxv1.AgentService_ConnectClient {
		s, err := f.client(t, f.ca, &cert).Connect(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&nixmoxv1.ConnectRequest{Message: &nixmoxv1.ConnectRequest_Hello{Hello: &nixmoxv1.Hello{ActiveGeneration: 1}}}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	dns := connect(dnsCert)
	if err := f.api.Hub.WaitConnected(ctx(t), "dns"); err != nil {
		t.Fatal(err)
	}
	if f.api.Hub.Connected("web") {
		t.Fatal("web connected before its agent did")
	}
	web := connect(webCert)
	if err := f.api.Hub.WaitConnected(ctx(t), "web"); err != nil {
		t.Fatal(err)
	}

	// Secrets for web go to web only; dns's next message is its own.
	secret := func(v string) *nixmoxv1.ConnectResponse {
		return &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Secrets{Secrets: &nixmoxv1.Secrets{Values: map[string][]byte{"k": []byte(v)}}}}
	}
	if err := f.api.Hub.Send(ctx(t), "web", secret("for-web")); err != nil {
		t.Fatal(err)
	}
	if err := f.api.Hub.Send(ctx(t), "dns", secret("for-dns")); err != nil {
		t.Fatal(err)
	}
	if m, err := dns.Recv(); err != nil || string(m.GetSecrets().GetValues()["k"]) != "for-dns" {
		t.Fatalf("dns received %v, %v", m, err)
	}
	if m, err := web.Recv(); err != nil || string(m.GetSecrets().GetValues()["k"]) != "for-web" {
		t.Fatalf("web received %v, %v", m, err)
	}

	// A report on dns's stream is dns's, whatever it says.
	if err := dns.Send(&nixmoxv1.ConnectRequest{Message: &nixmoxv1.ConnectRequest_Health{Health: &nixmoxv1.HealthReport{Check: "liveness", Health: nixmoxv1.Health_HEALTH_UNHEALTHY}}}); err != nil {
		t.Fatal(err)
	}
	// Closing the stream and waiting for the server to see it orders the
	// report before the check below.
	_ = dns.CloseSend()
	if _, err := dns.Recv(); err == nil {
		t.Fatal("stream still open")
	}
	if h, _ := f.st.Health("dns", 5); len(h) != 1 || h[0].Health != "HEALTH_UNHEALTHY" {
		t.Errorf("dns health %+v", h)
	}
	if h, _ := f.st.Health("web", 5); len(h) != 0 {
		t.Errorf("web got dns's report: %+v", h)
	}

	// No certificate: no stream.
	noCert, err := f.client(t, f.ca, nil).Connect(ctx(t))
	if err == nil {
		_, err = noCert.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a certificate: %v", err)
	}

	// A certificate from another CA fails the handshake.
	other, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := other.SignAgent(csrPEM, "web")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.client(t, f.ca, &forged).Connect(ctx(t))
	if err == nil {
		_, err = s.Recv()
	}
	// The server's TLS refuses it in the handshake, for its unknown
	// authority — before any gRPC handler runs (not the handler's
	// Unauthenticated for a missing certificate). The client may see the
	// alert or, in TLS 1.3, just the closed connection.
	if err == nil || status.Code(err) == codes.Unauthenticated {
		t.Errorf("a certificate from another CA: %v, want the handshake refused", err)
	}
	// (gRPC may try the connection again: every refusal must be for it.)
	refused := f.handshakes.refused()
	if len(refused) == 0 {
		t.Error("the server refused no handshake")
	}
	for _, err := range refused {
		if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("the server refused a handshake for another reason: %v", err)
		}
	}
}

// TestEnrollFloodIsBounded: 5,000 bogus enrollments — 200-character
// service names, and guessed tokens from one address — grow the state file
// by less than 64 KiB and the log by a few lines; they are refused for
// their size or their rate and counted in the metrics; an agent with a
// real token, from another address, enrolls in the middle of the flood.
func TestEnrollFloodIsBounded(t *testing.T) {
	f := start(t)
	metrics := server.NewMetrics(func(context.Context) ([]*nixmoxv1.ServiceStatus, error) { return nil, nil }, func() bool { return false })
	f.api.Metrics = metrics
	if err := f.st.PutToken("real-token", "web", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before, logBefore := size(), f.log.Len()
	c := f.client(t, f.ca, nil)
	codesSeen := map[codes.Code]int{}
	long := strings.Repeat("x", 200)
	var legit error
	for i := range 5000 {
		req := &nixmoxv1.EnrollRequest{Token: fmt.Sprintf("guess-%d", i), Service: "web"}
		if i%2 == 0 {
			req.Service = long
		}
		_, err := c.Enroll(ctx(t), req)
		codesSeen[status.Code(err)]++
		if i == 2500 {
			// An agent on another address (127.0.0.2), with a real token.
			keyPEM, csrPEM, err := pki.NewCSR()
			if err != nil {
				t.Fatal(err)
			}
			dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := nixmoxv1.NewAgentServiceClient(conn).Enroll(ctx(t), &nixmoxv1.EnrollRequest{Token: "real-token", Service: "web", CsrPem: csrPEM})
			conn.Close()
			if err == nil {
				_, err = tls.X509KeyPair(resp.GetCertificatePem(), keyPEM)
			}
			legit = err
		}
	}
	if legit != nil {
		t.Errorf("the real agent could not enroll during the flood: %v", legit)
	}
	if codesSeen[codes.OK] != 0 || codesSeen[codes.InvalidArgument] != 2500 || codesSeen[codes.ResourceExhausted] == 0 ||
		codesSeen[codes.PermissionDenied] > 100 {
		t.Errorf("answers by code: %v; want 2,500 invalid, the rest mostly over the rate", codesSeen)
	}
	if grew := size() - before; grew >= 64<<10 {
		t.Errorf("the state file grew by %d bytes", grew)
	}
	if grew := f.log.Len() - logBefore; grew > 4<<10 {
		t.Errorf("the log grew by %d bytes", grew)
	}
	refused := 0.0
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "nixmox_enroll_refused_total" {
			for _, m := range mf.GetMetric() {
				refused += m.GetCounter().GetValue()
			}
		}
	}
	if refused != 5000 {
		t.Errorf("nixmox_enroll_refused_total = %v, want 5000", refused)
	}
	log, _ := f.st.AuditLog(0)
	if len(log) > 10 {
		t.Errorf("%d audit entries for one flood", len(log))
	}
}
