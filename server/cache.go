package server

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
)

// cacheFile matches what a Nix client asks a binary cache for: the cache's
// info, a store path's narinfo (by its 32-character hash) and a NAR file.
var cacheFile = regexp.MustCompile(`^/(nix-cache-info|[0-9a-df-np-sv-z]{32}\.narinfo|nar/[0-9a-df-np-sv-z]{52}\.nar(\.(xz|bz2|zst|br|gz))?)$`)

// cacheHandler serves the signed binary cache in dir to Nix clients: only
// the files a client asks for by name, never a directory listing (what is
// in the cache is learnt only by knowing a store path's hash), and only
// GET and HEAD.
func cacheHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if !cacheFile.MatchString(r.URL.Path) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", fi.ModTime(), f)
	})
}
