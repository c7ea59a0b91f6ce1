package plan

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/go-json-experiment/json/jsontext"
)

// Formats are the names WriteFormat accepts.
var Formats = []string{"text", "json", "dot", "mermaid"}

// groupTitles name the seed's four phases.
var groupTitles = [...]string{1: "tf:infra", 2: "nix:core", 3: "tf:auth-core", 4: "services"}

// WriteFormat writes the plan in one of Formats.
func (p *Plan) WriteFormat(w io.Writer, format string) error {
	switch format {
	case "text":
		return p.WriteText(w)
	case "json":
		return p.WriteJSON(w)
	case "dot":
		return p.WriteDOT(w)
	case "mermaid":
		return p.WriteMermaid(w)
	}
	return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

// WriteJSON writes the plan's JSON contract, indented, as it goes: a plan
// of ten thousand services is never held in memory as text.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := jsontext.NewEncoder(w, jsontext.WithIndent("  "))
	strs := func(name string, list []string) error {
		if err := enc.WriteToken(jsontext.String(name)); err != nil {
			return err
		}
		if err := enc.WriteToken(jsontext.BeginArray); err != nil {
			return err
		}
		for _, s := range list {
			if err := enc.WriteToken(jsontext.String(s)); err != nil {
				return err
			}
		}
		return enc.WriteToken(jsontext.EndArray)
	}
	if err := enc.WriteToken(jsontext.BeginObject); err != nil {
		return err
	}
	if err := strs("services", p.Services); err != nil {
		return err
	}
	if err := enc.WriteToken(jsontext.String("steps")); err != nil {
		return err
	}
	if err := enc.WriteToken(jsontext.BeginArray); err != nil {
		return err
	}
	for _, s := range p.Steps {
		for _, t := range []jsontext.Token{jsontext.BeginObject,
			jsontext.String("id"), jsontext.String(s.ID),
			jsontext.String("phase"), jsontext.String(string(s.Phase)),
			jsontext.String("service"), jsontext.String(s.Service)} {
			if err := enc.WriteToken(t); err != nil {
				return err
			}
		}
		if err := strs("needs", s.Needs); err != nil {
			return err
		}
		if err := enc.WriteToken(jsontext.EndObject); err != nil {
			return err
		}
	}
	if err := enc.WriteToken(jsontext.EndArray); err != nil {
		return err
	}
	return enc.WriteToken(jsontext.EndObject)
}

// WriteText writes the plan for a terminal: a summary line, then the steps
// grouped by phase, each with what it needs.
func (p *Plan) WriteText(w io.Writer) error {
	cp := p.CriticalPath()
	fmt.Fprintf(w, "Plan: %d services, %d steps; critical path %d steps: %s\n",
		len(p.Services), len(p.Steps), len(cp), strings.Join(cp, " → "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	group, service := 0, ""
	for _, s := range p.Steps {
		if g := p.Group(s); g != group {
			group, service = g, ""
			fmt.Fprintf(tw, "\nPhase %d: %s\n", g, groupTitles[g])
		}
		if group == 4 && s.Service != service {
			service = s.Service
			fmt.Fprintf(tw, "  %s\n", service)
		}
		indent := "  "
		if group == 4 {
			indent = "    "
		}
		needs := "-"
		if len(s.Needs) > 0 {
			needs = strings.Join(s.Needs, ", ")
		}
		fmt.Fprintf(tw, "%s%s\tneeds %s\n", indent, s.ID, needs)
	}
	return tw.Flush()
}

// WriteDOT writes the plan as a Graphviz digraph, one cluster per phase and
// an edge from each step to the steps that need it.
func (p *Plan) WriteDOT(w io.Writer) error {
	var b strings.Builder
	b.WriteString("digraph plan {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n")
	for g := 1; g <= 4; g++ {
		var ids []string
		for _, s := range p.Steps {
			if p.Group(s) == g {
				ids = append(ids, strconv.Quote(s.ID))
			}
		}
		if len(ids) == 0 {
			continue
		}
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%s;\n", g, strconv.Quote(fmt.Sprintf("%d %s", g, groupTitles[g])))
		for _, id := range ids {
			fmt.Fprintf(&b, "    %s;\n", id)
		}
		b.WriteString("  }\n")
	}
	for _, s := range p.Steps {
		for _, n := range s.Needs {
			fmt.Fprintf(&b, "  %s -> %s;\n", strconv.Quote(n), strconv.Quote(s.ID))
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMermaid writes the plan as a Mermaid flowchart, one subgraph per
// phase. Step IDs contain ':' which Mermaid does not allow in node ids, so
// nodes are numbered and labelled with their ID.
func (p *Plan) WriteMermaid(w io.Writer) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	node := make(map[string]string, len(p.Steps))
	for i, s := range p.Steps {
		node[s.ID] = "s" + strconv.Itoa(i)
	}
	for g := 1; g <= 4; g++ {
		open := false
		for _, s := range p.Steps {
			if p.Group(s) != g {
				continue
			}
			if !open {
				fmt.Fprintf(&b, "  subgraph phase%d[\"%d %s\"]\n", g, g, groupTitles[g])
				open = true
			}
			// IDs hold only [a-z0-9:-]: nothing to escape inside quotes.
			fmt.Fprintf(&b, "    %s[\"%s\"]\n", node[s.ID], s.ID)
		}
		if open {
			b.WriteString("  end\n")
		}
	}
	for _, s := range p.Steps {
		for _, n := range s.Needs {
			fmt.Fprintf(&b, "  %s --> %s\n", node[n], node[s.ID])
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
