package manifest

// charset is a set of ASCII bytes. Validation checks hundreds of thousands
// of names in a large manifest; these loops do in nanoseconds what the
// equivalent regular expressions (kept in the comments) do in hundreds.
type charset [256]bool

// newCharset returns the set of the listed bytes and a-b ranges, e.g.
// "a-z0-9_-" (a '-' last is itself).
func newCharset(spec string) *charset {
	var c charset
	for i := 0; i < len(spec); i++ {
		if i+2 < len(spec) && spec[i+1] == '-' {
			for b := spec[i]; b <= spec[i+2]; b++ {
				c[b] = true
			}
			i += 2
			continue
		}
		c[spec[i]] = true
	}
	return &c
}

// all reports whether every byte of s is in c and len(s) is within
// [lo, hi].
func (c *charset) all(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !c[s[i]] {
			return false
		}
	}
	return true
}

var (
	lowerAlnum  = newCharset("a-z0-9")
	lowerLabel  = newCharset("a-z0-9-")
	alnum       = newCharset("A-Za-z0-9")
	label       = newCharset("A-Za-z0-9-")
	identStart  = newCharset("A-Za-z_")
	identRest   = newCharset("A-Za-z0-9_-")
	scopeChars  = newCharset("A-Za-z0-9_.:/-")
	claimChars  = newCharset("A-Za-z0-9_.:-")
	clientChars = newCharset("A-Za-z0-9_.-")
	tagRest     = newCharset("a-z0-9_.+-")
	pathChars   = newCharset("A-Za-z0-9._~%/-")
	headerChars = newCharset("A-Za-z0-9-")
)

// labelOf reports whether s is a DNS label over the given sets:
// ^[edge]([inner]{0,61}[edge])?$.
func labelOf(s string, edge, inner *charset) bool {
	if len(s) == 0 || len(s) > 63 || !edge[s[0]] || !edge[s[len(s)-1]] {
		return false
	}
	return inner.all(s, 1, 63)
}

// isServiceName: ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$
func isServiceName(s string) bool { return labelOf(s, lowerAlnum, lowerLabel) }

// isDNSLabel: ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$
func isDNSLabel(s string) bool { return labelOf(s, alnum, label) }

// isIdent (database and role names): ^[A-Za-z_][A-Za-z0-9_-]{0,62}$
func isIdent(s string) bool { return s != "" && identStart[s[0]] && identRest.all(s, 1, 63) }

// isTag: ^[a-z0-9][a-z0-9_.+-]{0,63}$
func isTag(s string) bool { return s != "" && lowerAlnum[s[0]] && tagRest.all(s, 1, 64) }

// isRoutePath: ^/[A-Za-z0-9._~%/-]*$
func isRoutePath(s string) bool { return s != "" && s[0] == '/' && pathChars.all(s, 1, 4096) }

// ValidServiceName reports whether s can name a service: a DNS label of
// lower-case letters, digits and inner hyphens, at most 63 characters.
func ValidServiceName(s string) bool { return isServiceName(s) }
