package manifest

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// The decoder reads the manifest's JSON token by token (jsontext) straight
// into the typed model, rejecting duplicate keys itself (a bit per struct
// field is cheaper than jsontext's record of every name). Unlike
// encoding/json it does not stop at the first problem: every unknown field,
// wrong type and value outside an enum is recorded with its path, the value
// is skipped, and decoding goes on with the rest. Only malformed JSON stops
// it.

// streamDecoder is implemented by model types whose manifest form is not a
// plain struct (Proxy: one route or named routes).
type streamDecoder interface {
	decodeStream(d *decoder) error
}

// decoder keeps the path of the value being decoded as a stack, and only
// builds a Path when it has a problem to record: most values have none.
type decoder struct {
	dec   *jsontext.Decoder
	src   string   // the whole input: strings without escapes are slices of it
	base  int      // where dec's input starts in src
	start int      // where the last string read starts in src
	strs  []string // scratch for decodeStrings
	diags Diagnostics
	stack []string // keys, and "[i]" for list elements
}

func newDecoder(src string) *decoder {
	return &decoder{dec: newTokenizer(strings.NewReader(src)), src: src}
}

// tokenizerOptions leave duplicate keys to the decoder.
var tokenizerOptions = jsontext.AllowDuplicateNames(true)

func newTokenizer(r io.Reader) *jsontext.Decoder {
	return jsontext.NewDecoder(r, tokenizerOptions)
}

// duplicateKeyError is an object member given twice; off is where the
// second one starts in the input.
type duplicateKeyError struct {
	name string
	off  int
}

func (e *duplicateKeyError) Error() string { return fmt.Sprintf("duplicate key %q", e.name) }

func (d *decoder) duplicate(name string) error {
	return &duplicateKeyError{name: name, off: d.start}
}

// readString reads the string (or object member name) that comes next. One
// without escapes, nearly every one, is returned as a slice of the input:
// decoding a manifest does not allocate a string per value.
func (d *decoder) readString() (string, error) {
	raw, err := d.dec.ReadValue()
	if err != nil {
		return "", err
	}
	end := d.base + int(d.dec.InputOffset())
	d.start = end - len(raw)
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return d.src[d.start+1 : end-1], nil
	}
	s, err := jsontext.AppendUnquote(nil, raw)
	return string(s), err
}

func (d *decoder) push(key string) { d.stack = append(d.stack, key) }
func (d *decoder) pop()            { d.stack = d.stack[:len(d.stack)-1] }

// path returns the current location as a Path.
func (d *decoder) path() Path {
	var p Path
	for _, e := range d.stack {
		if strings.HasPrefix(e, "[") && len(p) > 0 {
			p[len(p)-1] += e
			continue
		}
		p = append(p, e)
	}
	return p
}

func (d *decoder) errorf(format string, args ...any) {
	d.diags.Addf(d.path(), format, args...)
}

// field is one struct field as the manifest sees it.
type field struct {
	name   string // json name
	index  int    // in the Go struct
	pos    int    // among the manifest fields
	doc    string
	def    string // default, "" when none
	hasDef bool
	enum   []string
	info   *structInfo // of the struct the field holds, through pointers, lists and maps; set by structOf
}

var fieldCache, structCache sync.Map // reflect.Type -> []field, *structInfo

// structInfo indexes a struct's fields by manifest name.
type structInfo struct {
	byName   map[string]field
	names    []string
	defaults reflect.Value // a value of the type with every default applied; copied, never written
	stream   bool          // *T is a streamDecoder
}

var typeOfStreamDecoder = reflect.TypeFor[streamDecoder]()

func structOf(t reflect.Type) *structInfo {
	if si, ok := structCache.Load(t); ok {
		return si.(*structInfo)
	}
	fs := fieldsOf(t)
	si := &structInfo{
		byName:   make(map[string]field, len(fs)),
		defaults: reflect.New(t).Elem(),
		stream:   reflect.PointerTo(t).Implements(typeOfStreamDecoder),
	}
	if len(fs) > 64 {
		panic(fmt.Sprintf("manifest: %s has more fields than structMembers tracks", t))
	}
	for _, f := range fs {
		if st := structBehind(t.Field(f.index).Type); st != nil {
			f.info = structOf(st)
		}
		si.byName[f.name] = f
		si.names = append(si.names, f.name)
	}
	setDefaults(si.defaults)
	structCache.Store(t, si)
	return si
}

// structBehind returns the struct type t holds, directly or through
// pointers, lists and maps; nil when none.
func structBehind(t reflect.Type) reflect.Type {
	for {
		switch t.Kind() {
		case reflect.Struct:
			return t
		case reflect.Pointer, reflect.Slice, reflect.Map:
			t = t.Elem()
		default:
			return nil
		}
	}
}

// The decoder's entry points, resolved on first use (not at start-up:
// most commands decode no manifest), after which decoding looks up no type.
var (
	manifestInfo = sync.OnceValue(func() *structInfo { return structOf(reflect.TypeFor[Manifest]()) })
	serviceInfo  = sync.OnceValue(func() *structInfo { return structOf(reflect.TypeFor[Service]()) })
	routeInfo    = sync.OnceValue(func() *structInfo { return structOf(reflect.TypeFor[Route]()) })
)

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
		f := field{name: name, index: i, pos: len(fs), doc: sf.Tag.Get("doc")}
		f.def, f.hasDef = sf.Tag.Lookup("default")
		if e := sf.Tag.Get("enum"); e != "" {
			f.enum = strings.Split(e, ",")
		}
		fs = append(fs, f)
	}
	fieldCache.Store(t, fs)
	return fs
}

// applyDefaults sets every field of the struct v that has a default tag,
// nested (non-pointer) structs included, and every other field to its zero
// value.
func applyDefaults(v reflect.Value) {
	v.Set(structOf(v.Type()).defaults)
}

// setDefaults sets every field of the struct v that has a default tag, and
// recurses into nested (non-pointer) structs.
func setDefaults(v reflect.Value) {
	for _, f := range fieldsOf(v.Type()) {
		fv := v.Field(f.index)
		if fv.Kind() == reflect.Struct {
			setDefaults(fv)
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

// decode reads one value into out (addressable); si describes the struct
// out holds (see field.info), if any. A problem with the value is recorded
// and the value skipped; the error is for malformed JSON only.
func (d *decoder) decode(out reflect.Value, si *structInfo) error {
	kind := d.dec.PeekKind()
	if kind == 'n' {
		// null is how Nix and YAML say "not set": keep the default.
		_, err := d.dec.ReadToken()
		return err
	}
	switch out.Kind() {
	case reflect.Pointer:
		nv := reflect.New(out.Type().Elem())
		if nv.Elem().Kind() == reflect.Struct {
			if si == nil {
				si = structOf(nv.Elem().Type())
			}
			if kind != '{' {
				// Leave it unset rather than a struct of defaults that
				// would draw follow-on errors.
				return d.typeError("an object")
			}
			nv.Elem().Set(si.defaults)
		}
		if err := d.decode(nv.Elem(), si); err != nil {
			return err
		}
		out.Set(nv)
		return nil
	case reflect.Struct:
		if si == nil {
			si = structOf(out.Type())
		}
		if si.stream {
			return out.Addr().Interface().(streamDecoder).decodeStream(d)
		}
		return d.decodeStruct(out, si)
	case reflect.Map:
		if kind != '{' {
			return d.typeError("an object")
		}
		if out.Type() == typeOfServices {
			return d.decodeServices(out)
		}
		if _, err := d.dec.ReadToken(); err != nil {
			return err
		}
		m := reflect.MakeMap(out.Type())
		ev := reflect.New(out.Type().Elem()).Elem() // reused: SetMapIndex copies
		for d.dec.PeekKind() != '}' {
			key, err := d.readString()
			if err != nil {
				return err
			}
			kv := reflect.ValueOf(key)
			if m.MapIndex(kv).IsValid() {
				return d.duplicate(key)
			}
			ev.SetZero()
			d.push(key)
			err = d.decode(ev, si)
			d.pop()
			if err != nil {
				return err
			}
			m.SetMapIndex(kv, ev)
		}
		out.Set(m)
		_, err := d.dec.ReadToken()
		return err
	case reflect.Slice:
		if kind != '[' {
			return d.typeError("a list")
		}
		if _, err := d.dec.ReadToken(); err != nil {
			return err
		}
		if out.Type() == typeOfStrings {
			return d.decodeStrings(out)
		}
		out.Set(reflect.MakeSlice(out.Type(), 0, 4))
		for i := 0; d.dec.PeekKind() != ']'; i++ {
			if i == out.Cap() {
				grown := reflect.MakeSlice(out.Type(), i, 2*i)
				reflect.Copy(grown, out)
				out.Set(grown)
			}
			out.SetLen(i + 1)
			d.push(indexKey(i))
			err := d.decode(out.Index(i), si)
			d.pop()
			if err != nil {
				return err
			}
		}
		_, err := d.dec.ReadToken()
		return err
	case reflect.String:
		if kind != '"' {
			return d.typeError("a string")
		}
		str, err := d.readString()
		if err != nil {
			return err
		}
		out.SetString(str)
		return nil
	case reflect.Bool:
		if kind != 't' && kind != 'f' {
			return d.typeError("true or false")
		}
		tok, err := d.dec.ReadToken()
		if err != nil {
			return err
		}
		out.SetBool(tok.Bool())
		return nil
	case reflect.Int:
		if kind != '0' {
			return d.typeError("a whole number")
		}
		raw, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		// 32 bits: no manifest number comes near, and no later arithmetic
		// can overflow on any platform.
		n, ok := parseInt32(raw)
		if !ok {
			d.errorf("must be a whole number, not the number %s", truncate(string(raw), 40))
			return nil
		}
		out.SetInt(n)
		return nil
	case reflect.Interface:
		v, err := d.jsonValue()
		if err != nil {
			return err
		}
		if v != nil {
			out.Set(reflect.ValueOf(v))
		}
		return nil
	}
	panic(fmt.Sprintf("manifest: cannot decode into %s", out.Type()))
}

func (d *decoder) decodeStruct(out reflect.Value, si *structInfo) error {
	if d.dec.PeekKind() != '{' {
		return d.typeError("an object")
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	return d.structMembers(out, si, "", false)
}

// structMembers decodes the members of an object whose '{' has been read,
// up to and including its '}'. When haveFirst is set, the name of the first
// member has been read too: first.
func (d *decoder) structMembers(out reflect.Value, st *structInfo, first string, haveFirst bool) error {
	var seen uint64      // by field pos
	var unknown []string // unknown names, rare
	for haveFirst || d.dec.PeekKind() != '}' {
		k := first
		if !haveFirst {
			var err error
			if k, err = d.readString(); err != nil {
				return err
			}
		}
		haveFirst = false
		d.push(k)
		var err error
		if f, ok := st.byName[k]; !ok {
			if slices.Contains(unknown, k) {
				return d.duplicate(k)
			}
			unknown = append(unknown, k)
			d.errorf("unknown field %q%s", k, didYouMean(k, st.names))
			err = d.dec.SkipValue()
		} else {
			if seen&(1<<f.pos) != 0 {
				return d.duplicate(k)
			}
			seen |= 1 << f.pos
			fv := out.Field(f.index)
			err = d.decode(fv, f.info)
			if f.enum != nil && err == nil && !slices.Contains(f.enum, fv.String()) {
				s := fv.String()
				d.errorf("%q is not one of %s%s", s, strings.Join(f.enum, ", "), didYouMean(s, f.enum))
			}
		}
		d.pop()
		if err != nil {
			return err
		}
	}
	_, err := d.dec.ReadToken()
	return err
}

var typeOfStrings = reflect.TypeFor[[]string]()

// decodeStrings decodes the elements of a list of strings, the most common
// list, whose '[' has been read: collected in the decoder's scratch, then
// copied into a list of exactly their number.
func (d *decoder) decodeStrings(out reflect.Value) error {
	start := len(d.strs)
	for i := 0; d.dec.PeekKind() != ']'; i++ {
		d.push(indexKey(i))
		var s string
		var err error
		switch d.dec.PeekKind() {
		case '"':
			s, err = d.readString()
		case 'n': // not set: the zero value, as everywhere
			_, err = d.dec.ReadToken()
		default:
			err = d.typeError("a string")
		}
		d.pop()
		if err != nil {
			return err
		}
		d.strs = append(d.strs, s)
	}
	list := make([]string, len(d.strs)-start)
	copy(list, d.strs[start:])
	d.strs = d.strs[:start]
	out.Set(reflect.ValueOf(list))
	_, err := d.dec.ReadToken()
	return err
}

// parseInt32 parses a JSON number (already checked by jsontext) that is a
// whole number within 32 bits.
func parseInt32(raw []byte) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false // a fraction or an exponent
		}
		n = n*10 + int64(c-'0')
	}
	if len(raw) > len(digits) {
		n = -n
	}
	return n, n >= math.MinInt32 && n <= math.MaxInt32
}

// typeError records that the next value is not what was wanted, and skips
// it.
func (d *decoder) typeError(want string) error {
	got := ""
	switch d.dec.PeekKind() {
	case '{':
		got = "an object"
	case '[':
		got = "a list"
	default:
		tok, err := d.dec.ReadToken()
		if err != nil {
			return err
		}
		switch tok.Kind() {
		case '"':
			got = fmt.Sprintf("the string %q", truncate(tok.String(), 40))
		case '0':
			got = "the number " + truncate(tok.String(), 40)
		default:
			got = tok.String()
		}
		d.errorf("must be %s, not %s", want, got)
		return nil
	}
	d.errorf("must be %s, not %s", want, got)
	return d.dec.SkipValue()
}

// indexKey is the stack entry of list element i; the first few are shared.
func indexKey(i int) string {
	if i < len(indexKeys) {
		return indexKeys[i]
	}
	return "[" + strconv.Itoa(i) + "]"
}

var indexKeys = func() []string {
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = "[" + strconv.Itoa(i) + "]"
	}
	return keys
}()

// truncate shortens s to n bytes for a message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

var typeOfServices = reflect.TypeOf(map[string]*Service(nil))

// decodeServices decodes core_services or services. Each service is read as
// a raw value and decoded by a worker with its own decoder, so that a large
// manifest is decoded on every core; diagnostics are merged afterwards.
func (d *decoder) decodeServices(out reflect.Value) error {
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	type entry struct {
		name   string
		lo, hi int // the value's place in d.src
		svc    *Service
	}
	var entries []entry
	services := map[string]*Service{}
	for d.dec.PeekKind() != '}' {
		name, err := d.readString()
		if err != nil {
			return err
		}
		if _, dup := services[name]; dup {
			return d.duplicate(name)
		}
		services[name] = nil
		raw, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		hi := d.base + int(d.dec.InputOffset())
		entries = append(entries, entry{name: name, lo: hi - len(raw), hi: hi})
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	workers := min(runtime.GOMAXPROCS(0), len(entries)/512+1)
	chunk := (len(entries) + workers - 1) / workers
	diags := make([]Diagnostics, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := min(w*chunk, len(entries)), min((w+1)*chunk, len(entries))
		wg.Go(func() {
			rd := strings.NewReader("")
			sub := &decoder{dec: newTokenizer(rd), src: d.src, stack: slices.Clone(d.stack)}
			for i := lo; i < hi; i++ {
				e := &entries[i]
				rd.Reset(d.src[e.lo:e.hi])
				sub.dec.Reset(rd, tokenizerOptions)
				sub.base = e.lo
				sub.push(e.name)
				v := reflect.ValueOf(&e.svc).Elem()
				err := sub.decode(v, serviceInfo())
				sub.pop()
				if err != nil {
					// A duplicate key: ReadValue checked the syntax.
					errs[w] = err
					return
				}
			}
			diags[w] = sub.diags
		})
	}
	wg.Wait()
	for w := range workers {
		if errs[w] != nil {
			return errs[w]
		}
		d.diags = append(d.diags, diags[w]...)
	}
	for _, e := range entries {
		services[e.name] = e.svc
	}
	out.Set(reflect.ValueOf(services))
	return nil
}
