package manifest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/hashicorp/go-hclog"
	"gopkg.in/yaml.v3"

	"github.com/nixmox/nixmox/internal/textfile"
	"github.com/nixmox/nixmox/pkg/nix"
)

// Format is how a manifest is written.
type Format string

// The formats a manifest can be written in.
const (
	FormatNix  Format = "nix"
	FormatJSON Format = "json"
	FormatYAML Format = "yaml"
)

// DefaultPaths are the files Find looks for, in order.
var DefaultPaths = []string{"nixmox.nix", "nixos/service-manifest.nix", "nixmox.json", "nixmox.yaml"}

// Find returns the first of DefaultPaths that exists below dir.
func Find(dir string) (string, error) {
	for _, p := range DefaultPaths {
		full := filepath.Join(dir, p)
		if _, err := os.Stat(full); err == nil {
			return full, nil
		}
	}
	return "", fmt.Errorf("no manifest found: looked for %s; name one with -f", strings.Join(DefaultPaths, ", "))
}

// FormatOf returns the format a file name implies.
func FormatOf(path string) (Format, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".nix":
		return FormatNix, nil
	case ".json":
		return FormatJSON, nil
	case ".yaml", ".yml":
		return FormatYAML, nil
	}
	return "", fmt.Errorf("%s: unknown manifest format %q: use .nix, .json, .yaml or .yml", path, filepath.Ext(path))
}

// Loader reads manifests. The zero value evaluates Nix with nix.Runner{}
// and logs nothing.
type Loader struct {
	Nix nix.Runner
	// Log, if set, gets how long reading (Nix's evaluation, for a .nix
	// file) and decoding with validation took, at debug level.
	Log hclog.Logger
}

// Load reads, decodes and validates the manifest at path.
//
// When the file cannot be read, evaluated or parsed, Load returns a nil
// manifest and that error. When it can but is invalid, Load returns the
// manifest as far as it could be decoded together with a *ValidationError
// listing every problem, so that callers can add their own findings (the
// dependency graph's) to the same report.
func (l Loader) Load(ctx context.Context, path string) (*Manifest, error) {
	format, err := FormatOf(path)
	if err != nil {
		return nil, err
	}
	log := l.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	start := time.Now()
	var src string
	if format == FormatNix {
		src, err = l.Nix.EvalJSON(ctx, path)
		format = FormatJSON
		log.Debug("manifest evaluated by nix", "file", path, "duration", time.Since(start))
	} else {
		src, err = textfile.Read(path)
		log.Debug("manifest read", "file", path, "duration", time.Since(start))
	}
	if err != nil {
		return nil, err
	}
	start = time.Now()
	m, err := ParseString(src, format, path)
	log.Debug("manifest decoded and validated", "file", path, "duration", time.Since(start))
	return m, err
}

// Parse decodes and validates a manifest already in JSON or YAML form; file
// names it in messages. Its results are as for Loader.Load.
func Parse(data []byte, format Format, file string) (*Manifest, error) {
	return ParseString(string(data), format, file)
}

// ParseString is Parse of a string, which the manifest then refers to
// rather than copies.
func ParseString(src string, format Format, file string) (*Manifest, error) {
	switch format {
	case FormatJSON:
	case FormatYAML:
		tree, err := parseYAML([]byte(src))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", displayFile(file), err)
		}
		data, err := json.Marshal(tree)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", displayFile(file), err)
		}
		src = string(data)
	default:
		return nil, fmt.Errorf("%s: cannot parse format %q", displayFile(file), format)
	}
	m, diags, err := decodeManifest(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", displayFile(file), err)
	}
	if m == nil {
		return nil, diags.Err(file)
	}
	m.File, m.JSON = file, src
	diags = append(diags, m.validate()...)
	return m, diags.Err(file)
}

// decodeManifest returns a nil manifest when src is not an object at all,
// and an error when it is not well-formed JSON.
func decodeManifest(src string) (*Manifest, Diagnostics, error) {
	d := newDecoder(src)
	if d.dec.PeekKind() != '{' {
		if err := d.typeError("an object (an attribute set)"); err != nil {
			return nil, nil, jsonError(src, d.dec, err)
		}
		return nil, d.diags, nil
	}
	m := &Manifest{}
	applyDefaults(reflect.ValueOf(m).Elem())
	if err := d.decode(reflect.ValueOf(m).Elem(), manifestInfo()); err != nil {
		return nil, nil, jsonError(src, d.dec, err)
	}
	if rest := strings.TrimLeft(src[d.dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		off := len(src) - len(rest)
		return nil, nil, jsonError(src, d.dec, &jsontext.SyntacticError{ByteOffset: int64(off), Err: errors.New("unexpected data after the manifest")})
	}
	for name, s := range m.CoreServices {
		if s != nil {
			s.Name, s.Core = name, true
		}
	}
	for name, s := range m.Services {
		if s != nil {
			s.Name = name
		}
	}
	return m, d.diags, nil
}

// jsonValue reads one value into the generic tree. Numbers stay
// json.Number, so that Terraform variables reach Terraform exactly.
func (d *decoder) jsonValue() (any, error) {
	switch d.dec.PeekKind() {
	case '{':
		if _, err := d.dec.ReadToken(); err != nil {
			return nil, err
		}
		obj := map[string]any{}
		for d.dec.PeekKind() != '}' {
			k, err := d.readString()
			if err != nil {
				return nil, err
			}
			if _, dup := obj[k]; dup {
				return nil, d.duplicate(k)
			}
			if obj[k], err = d.jsonValue(); err != nil {
				return nil, err
			}
		}
		_, err := d.dec.ReadToken()
		return obj, err
	case '[':
		if _, err := d.dec.ReadToken(); err != nil {
			return nil, err
		}
		list := []any{}
		for d.dec.PeekKind() != ']' {
			v, err := d.jsonValue()
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := d.dec.ReadToken()
		return list, err
	case '"':
		return d.readString()
	}
	tok, err := d.dec.ReadToken()
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch tok.Kind() {
	case '0':
		return json.Number(tok.String()), nil
	case 't', 'f':
		return tok.Bool(), nil
	case 'n':
		return nil, nil
	}
	return nil, fmt.Errorf("unexpected token %s", tok)
}

// jsonError says where decoding stopped, as line and column.
func jsonError(src string, dec *jsontext.Decoder, err error) error {
	off := int(dec.InputOffset())
	var se *jsontext.SyntacticError
	var de *duplicateKeyError
	if errors.As(err, &de) {
		off = de.off
	} else if errors.As(err, &se) {
		off = int(se.ByteOffset)
		err = se.Err
		if errors.Is(err, jsontext.ErrDuplicateName) {
			err = fmt.Errorf("duplicate key %q", se.JSONPointer.LastToken())
		} else if ptr := string(se.JSONPointer); ptr != "" {
			err = fmt.Errorf("%w (at %s)", err, ptr)
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("unexpected end of input")
	}
	off = min(max(off, 0), len(src))
	line := 1 + strings.Count(src[:off], "\n")
	col := 1 + off - (strings.LastIndexByte(src[:off], '\n') + 1)
	return fmt.Errorf("invalid JSON at line %d, column %d: %w", line, col, err)
}

func parseYAML(data []byte) (any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("the manifest is empty")
	}
	y := yamlConverter{budget: maxYAMLNodes}
	return y.value(doc.Content[0])
}

// maxYAMLNodes bounds how many nodes aliases may expand to, so that a small
// file cannot blow up into an enormous tree ("billion laughs").
const maxYAMLNodes = 1 << 20

type yamlConverter struct{ budget int }

// value converts a YAML node into the generic tree the decoder reads,
// keeping integers as int and refusing non-string keys.
func (y *yamlConverter) value(n *yaml.Node) (any, error) {
	if y.budget--; y.budget < 0 {
		return nil, errors.New("the YAML expands to too many values (aliases)")
	}
	yamlValue := y.value
	switch n.Kind {
	case yaml.MappingNode:
		obj := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" {
				return nil, fmt.Errorf("line %d: YAML merge keys (<<) are not supported", k.Line)
			}
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool") {
				return nil, fmt.Errorf("line %d: mapping keys must be strings", k.Line)
			}
			if _, dup := obj[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			val, err := yamlValue(v)
			if err != nil {
				return nil, err
			}
			obj[k.Value] = val
		}
		return obj, nil
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlValue(c)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	case yaml.AliasNode:
		return yamlValue(n.Alias)
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return yamlValue(n.Content[0])
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}
