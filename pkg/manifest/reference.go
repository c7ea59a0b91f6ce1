package manifest

import (
	"bytes"
	_ "embed"
	"fmt"
	"reflect"
	"strings"
	"text/template"
)

//go:embed reference.md.tmpl
var referenceTemplate string

// Reference returns the manifest reference (docs/manifest.md): the prose of
// reference.md.tmpl with a table per object type, built from the model's
// struct tags, so that every field, type and default is documented where it
// is defined.
func Reference() ([]byte, error) {
	tmpl, err := template.New("reference").Parse(referenceTemplate)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, map[string]string{"Fields": fieldTables()})
	return buf.Bytes(), err
}

func fieldTables() string {
	var b strings.Builder
	seen := map[reflect.Type]bool{}
	queue := []reflect.Type{reflect.TypeOf(Manifest{})}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if seen[t] {
			continue
		}
		seen[t] = true
		if t == typeOfProxy {
			fmt.Fprintf(&b, "### proxy\n\nEither one [route](#route) object, or an object of named routes (`name = { domain = ...; }`), each a [route](#route). An object counts as named routes when none of its keys is a route field and every value is an object.\n\n")
			queue = append(queue, typeOfRoute)
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n| field | type | default | description |\n|---|---|---|---|\n", anchor(t))
		for _, f := range fieldsOf(t) {
			ft := t.Field(f.index).Type
			def := ""
			if f.hasDef {
				def = "`" + f.def + "`"
				if ft.Kind() == reflect.String {
					def = "`\"" + f.def + "\"`"
				}
			}
			typ := typeName(ft)
			if f.enum != nil {
				typ = "one of `" + strings.Join(f.enum, "`, `") + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.name, typ, def, strings.ReplaceAll(f.doc, "|", "\\|"))
			for et := ft; ; {
				switch et.Kind() {
				case reflect.Pointer, reflect.Slice, reflect.Map:
					et = et.Elem()
					continue
				case reflect.Struct:
					queue = append(queue, et)
				}
				break
			}
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// anchor is the section name of a model type.
func anchor(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(Manifest{}):
		return "manifest (top level)"
	case reflect.TypeOf(OIDC{}), reflect.TypeOf(DB{}):
		return strings.ToLower(t.Name())
	}
	var out []rune
	for i, r := range t.Name() {
		if i > 0 && r >= 'A' && r <= 'Z' && !(t.Name()[i-1] >= 'A' && t.Name()[i-1] <= 'Z') {
			out = append(out, '_')
		}
		out = append(out, r)
	}
	return strings.ToLower(string(out))
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Struct:
		a := anchor(t)
		return fmt.Sprintf("[%s](#%s)", a, slug(a))
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "object of " + typeName(t.Elem())
	case reflect.Interface:
		return "any"
	case reflect.Int:
		return "integer"
	case reflect.Bool:
		return "boolean"
	}
	return t.Kind().String()
}

// slug is GitHub's heading anchor: lower case, spaces to '-', other
// punctuation but '-' and '_' dropped.
func slug(h string) string {
	var out []rune
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			out = append(out, '-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			out = append(out, r)
		}
	}
	return string(out)
}
