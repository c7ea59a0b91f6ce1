package manifest

import (
	"encoding/json"
	"reflect"
	"strconv"
)

var (
	typeOfProxy = reflect.TypeOf(Proxy{})
	typeOfRoute = reflect.TypeOf(Route{})
)

// JSONSchema returns a JSON Schema (draft 2020-12) of the manifest, for
// editors and for checking a manifest written by another tool. It is derived
// from the same struct tags as the decoder, so it accepts what the decoder
// accepts, field for field; the cross-field rules (addresses in the network,
// references between services, cycles) are checked by validation only.
func JSONSchema() ([]byte, error) {
	s := &schemaBuilder{defs: map[string]any{}}
	root := s.object(reflect.TypeOf(Manifest{}))
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = "https://github.com/nixmox/nixmox/schema/manifest.json"
	root["title"] = "nixmox service manifest"
	root["$defs"] = s.defs
	return json.MarshalIndent(root, "", "  ")
}

type schemaBuilder struct {
	defs map[string]any
}

// ref returns a $ref to the definition of struct type t, adding it first.
func (s *schemaBuilder) ref(t reflect.Type) map[string]any {
	name := t.Name()
	if _, ok := s.defs[name]; !ok {
		s.defs[name] = nil // placeholder against recursion
		if t == typeOfProxy {
			route := s.ref(typeOfRoute)
			s.defs[name] = map[string]any{
				"description": "One route, or an object of named routes.",
				"oneOf": []any{
					route,
					map[string]any{"type": "object", "minProperties": 1, "additionalProperties": route,
						"propertyNames": map[string]any{"pattern": serviceNamePattern}},
				},
			}
		} else {
			s.defs[name] = s.object(t)
		}
	}
	return map[string]any{"$ref": "#/$defs/" + name}
}

func (s *schemaBuilder) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	for _, f := range fieldsOf(t) {
		sf := t.Field(f.index)
		p := s.of(sf.Type)
		if f.doc != "" {
			p["description"] = f.doc
		}
		if f.enum != nil {
			p["enum"] = f.enum
		}
		if f.hasDef {
			switch sf.Type.Kind() {
			case reflect.Bool:
				p["default"] = f.def == "true"
			case reflect.Int:
				n, _ := strconv.Atoi(f.def)
				p["default"] = n
			default:
				p["default"] = f.def
			}
		}
		props[f.name] = p
	}
	return map[string]any{"type": "object", "additionalProperties": false, "properties": props}
}

// of returns the schema of a field type. References get their own object so
// that a description can sit beside the $ref (allowed since 2019-09).
func (s *schemaBuilder) of(t reflect.Type) map[string]any {
	switch t.Kind() {
	case reflect.Pointer:
		return s.of(t.Elem())
	case reflect.Struct:
		return s.ref(t)
	case reflect.Map:
		m := map[string]any{"type": "object", "additionalProperties": s.of(t.Elem())}
		if t.Elem() == reflect.TypeOf(&Service{}) {
			m["propertyNames"] = map[string]any{"pattern": serviceNamePattern}
		}
		return m
	case reflect.Slice:
		return map[string]any{"type": "array", "items": s.of(t.Elem())}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int:
		return map[string]any{"type": "integer"}
	}
	return map[string]any{} // any value: terraform variables
}
