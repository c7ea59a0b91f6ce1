package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// TestCacheServesFilesNotListings: the binary cache answers what a Nix
// client asks for by name and nothing else — its root, the nar/ directory
// and anything outside the cache are 404, never a listing.
func TestCacheServesFilesNotListings(t *testing.T) {
	dir := t.TempDir()
	const narinfo = "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r.narinfo"
	const nar = "nar/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r6s7v8w9x0y1z2a3b4c5d.nar"
	files := map[string]string{"nix-cache-info": "StoreDir: /nix/store\n", narinfo: "StorePath: x\n", nar: "nar bytes"}
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Something beside the cache that must never be served.
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "secret-key"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cacheHandler(dir))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		// A raw request line, so that the path reaches the handler as sent.
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for name, content := range files {
		if code, body := get("/" + name); code != 200 || body != content {
			t.Errorf("GET /%s: %d %q, want 200 %q", name, code, body, content)
		}
	}
	for _, path := range []string{"/", "/nar/", "/nar", "/?C=M;O=D", "/../secret-key", "/%2e%2e/secret-key", "/nar/../nix-cache-info", "/index.html"} {
		if code, body := get(path); code != 404 {
			t.Errorf("GET %s: %d %q, want 404", path, code, body)
		}
	}
	resp, err := http.Post(srv.URL+"/nix-cache-info", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}
