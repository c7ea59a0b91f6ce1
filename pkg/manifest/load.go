package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

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

// Loader reads manifests. The zero value evaluates Nix with nix.Runner{}.
type Loader struct {
	Nix nix.Runner
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
	var data []byte
	if format == FormatNix {
		data, err = l.Nix.EvalJSON(ctx, path)
		format = FormatJSON
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	return Parse(data, format, path)
}

// Parse decodes and validates a manifest already in JSON or YAML form; file
// names it in messages. Its results are as for Loader.Load.
func Parse(data []byte, format Format, file string) (*Manifest, error) {
	tree, err := parseTree(data, format)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", displayFile(file), err)
	}
	m, diags := decodeManifest(tree)
	if m == nil {
		return nil, diags.Err(file)
	}
	m.File = file
	diags = append(diags, m.validate()...)
	return m, diags.Err(file)
}

// decodeManifest returns a nil manifest when tree is not an object at all.
func decodeManifest(tree any) (*Manifest, Diagnostics) {
	d := &decoder{}
	m := &Manifest{}
	applyDefaults(reflect.ValueOf(m).Elem())
	if _, ok := tree.(map[string]any); !ok {
		d.typeError(nil, tree, "an object (an attribute set)")
		return nil, d.diags
	}
	d.decode(nil, tree, reflect.ValueOf(m).Elem())
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
	return m, d.diags
}

// parseTree reads JSON or YAML into a generic tree, rejecting duplicate keys
// and trailing data.
func parseTree(data []byte, format Format) (any, error) {
	switch format {
	case FormatJSON:
		return parseJSON(data)
	case FormatYAML:
		return parseYAML(data)
	}
	return nil, fmt.Errorf("cannot parse format %q", format)
}

func parseJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := jsonValue(dec)
	if err != nil {
		return nil, jsonError(data, dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, jsonError(data, dec, errors.New("unexpected data after the manifest"))
	}
	return v, nil
}

// jsonValue reads one value token by token so that duplicate keys, which
// encoding/json silently resolves to the last one, are an error.
func jsonValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key must be a string")
				}
				if _, dup := obj[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				v, err := jsonValue(dec)
				if err != nil {
					return nil, err
				}
				obj[k] = v
			}
			_, err := dec.Token() // '}'
			return obj, err
		case '[':
			list := []any{}
			for dec.More() {
				v, err := jsonValue(dec)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := dec.Token() // ']'
			return list, err
		}
		return nil, fmt.Errorf("unexpected %q", t)
	default:
		return t, nil
	}
}

// jsonError adds the line and column where decoding stopped.
func jsonError(data []byte, dec *json.Decoder, err error) error {
	// InputOffset is just past the token that was read: point at its last
	// byte. A SyntaxError's Offset already points at the offending byte.
	off := int(dec.InputOffset()) - 1
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = int(se.Offset)
	}
	off = max(off, 0)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("unexpected end of input")
	}
	off = min(off, len(data))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
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
