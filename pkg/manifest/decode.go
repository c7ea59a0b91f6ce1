package manifest

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The decoder turns a generic tree (what Nix's --json, encoding/json or YAML
// produce: map[string]any, []any, string, bool, numbers, nil) into the typed
// model. Unlike encoding/json it does not stop at the first problem: every
// unknown field, wrong type and value outside an enum is recorded with its
// path, and decoding goes on with the rest.

// treeDecoder is implemented by model types whose manifest form is not a
// plain struct (Proxy: one route or named routes).
type treeDecoder interface {
	decodeTree(d *decoder, p Path, in any)
}

type decoder struct {
	diags Diagnostics
}

// field is one struct field as the manifest sees it.
type field struct {
	name   string // json name
	index  int
	doc    string
	def    string // default, "" when none
	hasDef bool
	enum   []string
}

var fieldCache sync.Map // reflect.Type -> []field

// fieldsOf returns the manifest fields of struct type t, in declaration order.
func fieldsOf(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "" || name == "-" || !sf.IsExported() {
			continue
		}
		f := field{name: name, index: i, doc: sf.Tag.Get("doc")}
		f.def, f.hasDef = sf.Tag.Lookup("default")
		if e := sf.Tag.Get("enum"); e != "" {
			f.enum = strings.Split(e, ",")
		}
		fs = append(fs, f)
	}
	fieldCache.Store(t, fs)
	return fs
}

// applyDefaults sets every field of the struct v that has a default tag, and
// recurses into nested (non-pointer) structs.
func applyDefaults(v reflect.Value) {
	for _, f := range fieldsOf(v.Type()) {
		fv := v.Field(f.index)
		if fv.Kind() == reflect.Struct {
			applyDefaults(fv)
			continue
		}
		if !f.hasDef {
			continue
		}
		switch fv.Kind() {
		case reflect.String:
			fv.SetString(f.def)
		case reflect.Bool:
			fv.SetBool(f.def == "true")
		case reflect.Int:
			n, err := strconv.Atoi(f.def)
			if err != nil {
				panic(fmt.Sprintf("manifest: bad default %q for %s", f.def, f.name))
			}
			fv.SetInt(int64(n))
		default:
			panic(fmt.Sprintf("manifest: no default of kind %s for %s", fv.Kind(), f.name))
		}
	}
}

// withDefaults returns a new T with every default applied.
func withDefaults[T any]() *T {
	v := new(T)
	applyDefaults(reflect.ValueOf(v).Elem())
	return v
}

// decode stores in into out (addressable), recording problems at p.
func (d *decoder) decode(p Path, in any, out reflect.Value) {
	if in == nil {
		// null is how Nix and YAML say "not set": keep the default.
		return
	}
	if out.CanAddr() {
		if td, ok := out.Addr().Interface().(treeDecoder); ok {
			td.decodeTree(d, p, in)
			return
		}
	}
	switch out.Kind() {
	case reflect.Pointer:
		nv := reflect.New(out.Type().Elem())
		if nv.Elem().Kind() == reflect.Struct {
			if _, isObj := in.(map[string]any); !isObj {
				// Leave it unset rather than a struct of defaults that
				// would draw follow-on errors.
				d.typeError(p, in, "an object")
				return
			}
			applyDefaults(nv.Elem())
		}
		d.decode(p, in, nv.Elem())
		out.Set(nv)
	case reflect.Struct:
		d.decodeStruct(p, in, out)
	case reflect.Map:
		obj, ok := in.(map[string]any)
		if !ok {
			d.typeError(p, in, "an object")
			return
		}
		m := reflect.MakeMapWithSize(out.Type(), len(obj))
		for _, k := range sortedKeys(obj) {
			ev := reflect.New(out.Type().Elem()).Elem()
			d.decode(p.Key(k), obj[k], ev)
			m.SetMapIndex(reflect.ValueOf(k), ev)
		}
		out.Set(m)
	case reflect.Slice:
		list, ok := in.([]any)
		if !ok {
			d.typeError(p, in, "a list")
			return
		}
		s := reflect.MakeSlice(out.Type(), len(list), len(list))
		for i, e := range list {
			d.decode(p.Index(i), e, s.Index(i))
		}
		out.Set(s)
	case reflect.String:
		s, ok := in.(string)
		if !ok {
			d.typeError(p, in, "a string")
			return
		}
		out.SetString(s)
	case reflect.Bool:
		b, ok := in.(bool)
		if !ok {
			d.typeError(p, in, "true or false")
			return
		}
		out.SetBool(b)
	case reflect.Int:
		n, ok := toInt(in)
		if !ok {
			d.typeError(p, in, "a whole number")
			return
		}
		out.SetInt(n)
	case reflect.Interface:
		out.Set(reflect.ValueOf(in))
	default:
		panic(fmt.Sprintf("manifest: cannot decode into %s", out.Type()))
	}
}

func (d *decoder) decodeStruct(p Path, in any, out reflect.Value) {
	obj, ok := in.(map[string]any)
	if !ok {
		d.typeError(p, in, "an object")
		return
	}
	fs := fieldsOf(out.Type())
	byName := make(map[string]field, len(fs))
	names := make([]string, len(fs))
	for i, f := range fs {
		byName[f.name] = f
		names[i] = f.name
	}
	for _, k := range sortedKeys(obj) {
		f, ok := byName[k]
		if !ok {
			d.diags.Addf(p.Key(k), "unknown field %q%s", k, didYouMean(k, names))
			continue
		}
		fv := out.Field(f.index)
		d.decode(p.Key(k), obj[k], fv)
		if f.enum != nil && fv.Kind() == reflect.String {
			if s := fv.String(); !contains(f.enum, s) {
				d.diags.Addf(p.Key(k), "%q is not one of %s%s", s, strings.Join(f.enum, ", "), didYouMean(s, f.enum))
			}
		}
	}
}

func (d *decoder) typeError(p Path, in any, want string) {
	d.diags.Addf(p, "must be %s, not %s", want, describe(in))
}

// describe names a generic value's type for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("the string %q", truncate(v, 40))
	case bool:
		return fmt.Sprintf("%t", v)
	case json.Number:
		return "the number " + v.String()
	case float64, int, int64, uint64:
		return fmt.Sprintf("the number %v", v)
	default:
		return fmt.Sprintf("%T", v)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// toInt accepts integral numbers in every form the loaders produce.
func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		if err != nil {
			return 0, false
		}
		return i, fitsInt(i)
	case int:
		return int64(n), true
	case int64:
		return n, fitsInt(n)
	case uint64:
		if n > math.MaxInt32 {
			return 0, false
		}
		return int64(n), true
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > math.MaxInt32 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// fitsInt keeps numbers within 32 bits so that no platform or later
// arithmetic overflows; no manifest number is anywhere near that.
func fitsInt(i int64) bool { return i >= math.MinInt32 && i <= math.MaxInt32 }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
