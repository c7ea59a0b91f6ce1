// Package tfcheck checks Terraform configurations against real provider
// schemas (the JSON of `terraform providers schema -json`) without
// downloading any provider: every resource and data source of a known
// provider must use known attribute and block names, set every required
// attribute, and give literal values of the right type. References and
// function calls are not evaluated; their types are Terraform's to check.
package tfcheck

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Schemas holds block schemas by resource or data source type.
type Schemas struct {
	Resources   map[string]*Block
	DataSources map[string]*Block
}

// Block is a schema block.
type Block struct {
	Attributes map[string]*Attribute `json:"attributes"`
	BlockTypes map[string]*struct {
		Block   *Block `json:"block"`
		Nesting string `json:"nesting_mode"`
	} `json:"block_types"`
}

// Attribute is a schema attribute.
type Attribute struct {
	Type     json.RawMessage `json:"type"`
	Required bool            `json:"required"`
	Optional bool            `json:"optional"`
	Computed bool            `json:"computed"`
}

// Load reads provider schema files.
func Load(files ...string) (*Schemas, error) {
	s := &Schemas{Resources: map[string]*Block{}, DataSources: map[string]*Block{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Providers map[string]struct {
				Resources   map[string]struct{ Block *Block } `json:"resource_schemas"`
				DataSources map[string]struct{ Block *Block } `json:"data_source_schemas"`
			} `json:"provider_schemas"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, p := range doc.Providers {
			for n, r := range p.Resources {
				s.Resources[n] = r.Block
			}
			for n, d := range p.DataSources {
				s.DataSources[n] = d.Block
			}
		}
	}
	return s, nil
}

// value is an attribute's value as written: a literal, or unknown
// (an expression, a reference, an interpolated string).
type value struct {
	known bool
	v     cty.Value
}

// Check checks every *.tf and *.tf.json file of the tree (path -> content)
// and returns one message per problem, sorted. It reports resource types of
// providers it has schemas for; other types (terraform_data, unknown
// providers) are skipped and counted in checked.
func (s *Schemas) Check(files map[string][]byte) (problems []string, checked int) {
	for _, p := range slices.Sorted(maps.Keys(files)) {
		var blocks []block
		var err error
		switch {
		case strings.HasSuffix(p, ".tf.json"):
			blocks, err = jsonBlocks(files[p])
		case path.Ext(p) == ".tf":
			blocks, err = hclBlocks(p, files[p])
		default:
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		for _, b := range blocks {
			schema := s.Resources[b.typ]
			if b.data {
				schema = s.DataSources[b.typ]
			}
			if schema == nil {
				continue
			}
			checked++
			where := fmt.Sprintf("%s: %s.%s", p, b.typ, b.name)
			if b.data {
				where = fmt.Sprintf("%s: data.%s.%s", p, b.typ, b.name)
			}
			for _, msg := range checkBody(schema, b.attrs, b.blocks) {
				problems = append(problems, where+": "+msg)
			}
		}
	}
	sort.Strings(problems)
	return problems, checked
}

// meta are the arguments every resource accepts.
var meta = map[string]bool{"count": true, "for_each": true, "depends_on": true, "provider": true, "lifecycle": true}

func checkBody(schema *Block, attrs map[string]value, blocks map[string]int) []string {
	var out []string
	for name, v := range attrs {
		a, ok := schema.Attributes[name]
		if !ok {
			if !meta[name] {
				out = append(out, fmt.Sprintf("unknown attribute %q", name))
			}
			continue
		}
		if a.Computed && !a.Optional && !a.Required {
			out = append(out, fmt.Sprintf("attribute %q is computed only", name))
		}
		if v.known {
			if msg := typeCheck(a.Type, v.v); msg != "" {
				out = append(out, fmt.Sprintf("attribute %q: %s", name, msg))
			}
		}
	}
	for name := range blocks {
		if _, ok := schema.BlockTypes[name]; !ok && !meta[name] {
			out = append(out, fmt.Sprintf("unknown block %q", name))
		}
	}
	for name, a := range schema.Attributes {
		if _, set := attrs[name]; a.Required && !set {
			out = append(out, fmt.Sprintf("required attribute %q is missing", name))
		}
	}
	sort.Strings(out)
	return out
}

// typeCheck compares a literal with a schema type (JSON: "string",
// ["list","string"], ["map","string"], ...).
func typeCheck(raw json.RawMessage, v cty.Value) string {
	if v.IsNull() {
		return ""
	}
	var t any
	_ = json.Unmarshal(raw, &t)
	return typeCheckAny(t, v)
}

func typeCheckAny(t any, v cty.Value) string {
	vt := v.Type()
	switch t := t.(type) {
	case string:
		switch t {
		case "string":
			if vt != cty.String && vt != cty.Number && vt != cty.Bool {
				return fmt.Sprintf("want a string, got %s", vt.FriendlyName())
			}
		case "number":
			if vt != cty.Number && vt != cty.String {
				return fmt.Sprintf("want a number, got %s", vt.FriendlyName())
			}
		case "bool":
			if vt != cty.Bool && vt != cty.String {
				return fmt.Sprintf("want a bool, got %s", vt.FriendlyName())
			}
		}
	case []any:
		if len(t) != 2 {
			return ""
		}
		kind, _ := t[0].(string)
		switch kind {
		case "list", "set":
			if !vt.IsTupleType() && !vt.IsListType() && !vt.IsSetType() {
				return fmt.Sprintf("want a %s, got %s", kind, vt.FriendlyName())
			}
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				if msg := typeCheckAny(t[1], e); msg != "" {
					return "element: " + msg
				}
			}
		case "map", "object":
			if !vt.IsObjectType() && !vt.IsMapType() {
				return fmt.Sprintf("want a %s, got %s", kind, vt.FriendlyName())
			}
		}
	}
	return ""
}

type block struct {
	data   bool
	typ    string
	name   string
	attrs  map[string]value
	blocks map[string]int
}

func hclBlocks(name string, src []byte) ([]block, error) {
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	body := f.Body.(*hclsyntax.Body)
	var out []block
	for _, b := range body.Blocks {
		if (b.Type != "resource" && b.Type != "data") || len(b.Labels) != 2 {
			continue
		}
		blk := block{data: b.Type == "data", typ: b.Labels[0], name: b.Labels[1], attrs: map[string]value{}, blocks: map[string]int{}}
		for n, a := range b.Body.Attributes {
			v, d := a.Expr.Value(nil)
			blk.attrs[n] = value{known: !d.HasErrors() && v.IsWhollyKnown(), v: v}
		}
		for _, nb := range b.Body.Blocks {
			blk.blocks[nb.Type]++
		}
		out = append(out, blk)
	}
	return out, nil
}

func jsonBlocks(src []byte) ([]block, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	var out []block
	for _, kind := range []string{"resource", "data"} {
		raw, ok := doc[kind]
		if !ok {
			continue
		}
		var byType map[string]map[string]map[string]any
		if err := json.Unmarshal(raw, &byType); err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		for typ, byName := range byType {
			for name, body := range byName {
				blk := block{data: kind == "data", typ: typ, name: name, attrs: map[string]value{}, blocks: map[string]int{}}
				for k, v := range body {
					blk.attrs[k] = jsonValue(v)
				}
				out = append(out, blk)
			}
		}
	}
	return out, nil
}

// jsonValue turns a JSON value into a literal; strings with a template
// sequence are unknown (Terraform evaluates them).
func jsonValue(v any) value {
	switch v := v.(type) {
	case string:
		if strings.Contains(strings.ReplaceAll(v, "$${", ""), "${") {
			return value{}
		}
		return value{known: true, v: cty.StringVal(v)}
	case float64:
		return value{known: true, v: cty.NumberFloatVal(v)}
	case bool:
		return value{known: true, v: cty.BoolVal(v)}
	case []any:
		var elems []cty.Value
		for _, e := range v {
			ev := jsonValue(e)
			if !ev.known {
				return value{}
			}
			elems = append(elems, ev.v)
		}
		if len(elems) == 0 {
			return value{known: true, v: cty.EmptyTupleVal}
		}
		return value{known: true, v: cty.TupleVal(elems)}
	case map[string]any:
		attrs := map[string]cty.Value{}
		for k, e := range v {
			ev := jsonValue(e)
			if !ev.known {
				return value{}
			}
			attrs[k] = ev.v
		}
		return value{known: true, v: cty.ObjectVal(attrs)}
	}
	return value{known: true, v: cty.NullVal(cty.DynamicPseudoType)}
}
