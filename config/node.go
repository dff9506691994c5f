package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

// Kind is the kind of a Node.
type Kind uint8

// Node kinds.
const (
	KindNull Kind = iota
	KindScalar
	KindMap
	KindList
)

// ScalarType is what a scalar was written as, where the format says so
// (quoted strings are strings in both YAML and TOML).
type ScalarType uint8

// Scalar types.
const (
	ScalarString ScalarType = iota
	ScalarInt
	ScalarFloat
	ScalarBool
)

// Node is one value of a configuration file, YAML or TOML, with the line
// it was written on, so that every error can name the file, the line and
// the field. Decode fills a Go value from it.
type Node struct {
	Kind  Kind
	Type  ScalarType // for KindScalar
	Value string     // for KindScalar
	Line  int        // 1-based; 0 when unknown
	// Keys and Values are the entries of a map, in file order.
	Keys   []string
	Values []*Node
	Items  []*Node // for KindList
}

// Get returns the value of key in a map node, or nil.
func (n *Node) Get(key string) *Node {
	if n == nil || n.Kind != KindMap {
		return nil
	}
	for i, k := range n.Keys {
		if k == key {
			return n.Values[i]
		}
	}
	return nil
}

// Error is a configuration error: where, which field, what is wrong.
type Error struct {
	File string // base name of the file
	Line int    // 0 when unknown
	Path string // field path, "models[0].max_mode"; empty for the whole file
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrInvalid is wrapped by every error about a configuration's content.
var ErrInvalid = errors.New("invalid configuration")

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// parseTree parses data as YAML or TOML, chosen by the file name's
// extension.
func parseTree(name string, data []byte) (*Node, error) {
	base := filepath.Base(name)
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return parseYAML(base, data)
	case ".toml":
		return parseTOML(base, data)
	}
	return nil, &Error{File: base, Msg: "unknown format: name the file .yaml, .yml or .toml"}
}

// ---- YAML ----

func parseYAML(file string, data []byte) (*Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(file, err)
	}
	if doc.Kind == 0 { // empty document
		return &Node{Kind: KindMap, Line: 1}, nil
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return &Node{Kind: KindMap, Line: 1}, nil
		}
		root = root.Content[0]
	}
	return fromYAML(file, root, 0)
}

// yamlError turns "yaml: line 7: did not find ..." into file:7: ....
func yamlError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, tail
			}
		}
	}
	return &Error{File: file, Line: line, Msg: "parsing YAML: " + msg}
}

func fromYAML(file string, y *yaml.Node, depth int) (*Node, error) {
	if depth > 32 {
		return nil, &Error{File: file, Line: y.Line, Msg: "nested too deeply"}
	}
	switch y.Kind {
	case yaml.AliasNode:
		return nil, &Error{File: file, Line: y.Line, Msg: "YAML aliases are not supported: write the value out"}
	case yaml.ScalarNode:
		n := &Node{Kind: KindScalar, Value: y.Value, Line: y.Line}
		switch y.ShortTag() {
		case "!!null":
			n.Kind = KindNull
		case "!!int":
			n.Type = ScalarInt
		case "!!float":
			n.Type = ScalarFloat
		case "!!bool":
			n.Type = ScalarBool
		}
		return n, nil
	case yaml.SequenceNode:
		n := &Node{Kind: KindList, Line: y.Line}
		for _, c := range y.Content {
			item, err := fromYAML(file, c, depth+1)
			if err != nil {
				return nil, err
			}
			n.Items = append(n.Items, item)
		}
		return n, nil
	case yaml.MappingNode:
		n := &Node{Kind: KindMap, Line: y.Line}
		seen := map[string]int{}
		for i := 0; i+1 < len(y.Content); i += 2 {
			k, v := y.Content[i], y.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
				return nil, &Error{File: file, Line: k.Line, Msg: "keys must be plain names (no merge keys or complex keys)"}
			}
			if prev, dup := seen[k.Value]; dup {
				return nil, &Error{File: file, Line: k.Line, Msg: fmt.Sprintf("key %q already set on line %d", k.Value, prev)}
			}
			seen[k.Value] = k.Line
			val, err := fromYAML(file, v, depth+1)
			if err != nil {
				return nil, err
			}
			if val.Kind == KindNull || val.Line == 0 {
				val.Line = k.Line
			}
			n.Keys = append(n.Keys, k.Value)
			n.Values = append(n.Values, val)
		}
		return n, nil
	}
	return nil, &Error{File: file, Line: y.Line, Msg: "unexpected YAML node"}
}

// ---- TOML ----

func parseTOML(file string, data []byte) (*Node, error) {
	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: file, Line: pe.Position.Line, Msg: "parsing TOML: " + pe.Message}
		}
		return nil, &Error{File: file, Msg: "parsing TOML: " + err.Error()}
	}
	lines := tomlLines(string(data))
	order := map[string]int{}
	for i, k := range md.Keys() {
		if _, ok := order[k.String()]; !ok {
			order[k.String()] = i
		}
	}
	return fromTOML(raw, "", "", lines, order, 1), nil
}

// fromTOML converts a decoded TOML value. path is the value's position
// with list indexes ("models[0].tcp"), for the line table; key is its
// dotted key without indexes, for the key order.
func fromTOML(v any, path, key string, lines map[string]int, order map[string]int, parentLine int) *Node {
	line := parentLine
	if l, ok := lines[path]; ok {
		line = l
	}
	switch v := v.(type) {
	case map[string]any:
		n := &Node{Kind: KindMap, Line: line}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.SliceStable(keys, func(i, j int) bool {
			li, lj := lines[join(path, keys[i])], lines[join(path, keys[j])]
			if li != lj {
				return li < lj
			}
			oi, iok := order[join(key, keys[i])]
			oj, jok := order[join(key, keys[j])]
			if iok && jok {
				return oi < oj
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			n.Keys = append(n.Keys, k)
			n.Values = append(n.Values, fromTOML(v[k], join(path, k), join(key, k), lines, order, line))
		}
		return n
	case []map[string]any:
		n := &Node{Kind: KindList, Line: line}
		for i, item := range v {
			n.Items = append(n.Items, fromTOML(item, fmt.Sprintf("%s[%d]", path, i), key, lines, order, line))
		}
		return n
	case []any:
		n := &Node{Kind: KindList, Line: line}
		for i, item := range v {
			n.Items = append(n.Items, fromTOML(item, fmt.Sprintf("%s[%d]", path, i), key, lines, order, line))
		}
		return n
	case string:
		return &Node{Kind: KindScalar, Type: ScalarString, Value: v, Line: line}
	case int64:
		return &Node{Kind: KindScalar, Type: ScalarInt, Value: strconv.FormatInt(v, 10), Line: line}
	case float64:
		return &Node{Kind: KindScalar, Type: ScalarFloat, Value: strconv.FormatFloat(v, 'g', -1, 64), Line: line}
	case bool:
		return &Node{Kind: KindScalar, Type: ScalarBool, Value: strconv.FormatBool(v), Line: line}
	case time.Time:
		return &Node{Kind: KindScalar, Type: ScalarString, Value: v.Format(time.RFC3339Nano), Line: line}
	}
	return &Node{Kind: KindScalar, Type: ScalarString, Value: fmt.Sprint(v), Line: line}
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// tomlLines maps the path of every table header and key assignment of a
// TOML document ("models[1].max_mode") to its line. The document has
// already been parsed, so only its shape is followed here: headers, keys,
// and values spanning lines (arrays, multi-line strings) skipped over.
// Keys inside inline tables take the line of the table's key.
func tomlLines(src string) map[string]int {
	lines := map[string]int{}
	arrays := map[string]int{} // array-of-tables path without indexes → count
	prefix := ""
	depth := 0    // open brackets and braces of a value spanning lines
	inMulti := "" // `"""` or `'''` while inside a multi-line string
	resolve := func(dotted []string) string {
		// Turn a header's dotted key into a path with the index of the
		// last element of every array of tables it crosses.
		var p, bare string
		for _, part := range dotted {
			p, bare = join(p, part), join(bare, part)
			if n, ok := arrays[bare]; ok {
				p = fmt.Sprintf("%s[%d]", p, n-1)
			}
		}
		return p
	}
	for i, raw := range strings.Split(src, "\n") {
		ln := i + 1
		line := raw
		if inMulti != "" {
			if _, after, ok := strings.Cut(line, inMulti); ok {
				line, inMulti = after, ""
			} else {
				continue
			}
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "" || t[0] == '#':
			continue
		case strings.HasPrefix(t, "[["):
			end := strings.Index(t, "]]")
			if end < 0 {
				continue
			}
			keys := splitKey(t[2:end])
			bare := strings.Join(keys, ".")
			parent := resolve(keys[:len(keys)-1])
			arrays[bare]++
			prefix = fmt.Sprintf("%s[%d]", join(parent, keys[len(keys)-1]), arrays[bare]-1)
			if _, ok := lines[join(parent, keys[len(keys)-1])]; !ok {
				lines[join(parent, keys[len(keys)-1])] = ln
			}
			lines[prefix] = ln
		case t[0] == '[':
			end := strings.LastIndex(t, "]")
			if end < 0 {
				continue
			}
			prefix = resolve(splitKey(t[1:end]))
			lines[prefix] = ln
		default:
			k, v, ok := cutAssign(t)
			if !ok {
				continue
			}
			p := prefix
			for _, part := range splitKey(k) {
				p = join(p, part)
				if _, seen := lines[p]; !seen {
					lines[p] = ln
				}
			}
			v = strings.TrimSpace(v)
			for _, q := range []string{`"""`, `'''`} {
				if strings.HasPrefix(v, q) && !strings.Contains(v[3:], q) {
					inMulti = q
				}
			}
			if inMulti == "" {
				depth = bracketDelta(v)
			}
		}
	}
	return lines
}

// cutAssign splits "key = value", keys possibly quoted.
func cutAssign(s string) (key, value string, ok bool) {
	inQuote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote != 0:
			if c == inQuote {
				inQuote = 0
			}
		case c == '"' || c == '\'':
			inQuote = c
		case c == '=':
			return strings.TrimSpace(s[:i]), s[i+1:], true
		}
	}
	return "", "", false
}

// splitKey splits a dotted TOML key, unquoting its parts.
func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	inQuote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote != 0:
			if c == inQuote {
				inQuote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			inQuote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

// bracketDelta counts the brackets and braces a line opens minus those it
// closes, outside strings and comments.
func bracketDelta(s string) int {
	d := 0
	inQuote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote != 0:
			if c == '\\' && inQuote == '"' {
				i++
			} else if c == inQuote {
				inQuote = 0
			}
		case c == '"' || c == '\'':
			inQuote = c
		case c == '#':
			return d
		case c == '[' || c == '{':
			d++
		case c == ']' || c == '}':
			d--
		}
	}
	return d
}

// ---- decoding ----

// decoder fills Go values from nodes, reporting errors with the file,
// line and field path.
type decoder struct {
	file string
}

func (d *decoder) errorf(n *Node, path, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	textType     = reflect.TypeFor[encoding.TextUnmarshaler]()
	nodeType     = reflect.TypeFor[*Node]()
)

// Decode fills v, a pointer to a struct whose fields carry `cfg:"name"`
// tags, from n. A key with no matching field, a value of the wrong kind
// or out of range is an error naming file:line and the field's path below
// path. A field of type *Node receives the raw node.
func Decode(file string, n *Node, path string, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("config.Decode: want a non-nil pointer, got %T", v)
	}
	d := &decoder{file: filepath.Base(file)}
	return d.decode(n, path, rv.Elem())
}

func (d *decoder) decode(n *Node, path string, v reflect.Value) error {
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(n))
		return nil
	}
	if n == nil || n.Kind == KindNull {
		return nil // leave the zero value: the default applies
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, path, v.Elem())
	}
	if v.Type() == durationType {
		return d.duration(n, path, v)
	}
	if v.CanAddr() && v.Addr().Type().Implements(textType) {
		if n.Kind != KindScalar {
			return d.errorf(n, path, "want a single value, found %s", kindName(n))
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			return d.errorf(n, path, "%v", err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.structure(n, path, v)
	case reflect.Slice:
		if n.Kind != KindList {
			return d.errorf(n, path, "want a list, found %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Items), len(n.Items))
		for i, item := range n.Items {
			if err := d.decode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		if n.Kind != KindScalar {
			return d.errorf(n, path, "want a string, found %s", kindName(n))
		}
		if n.Type != ScalarString {
			return d.errorf(n, path, "want a string, found %s %s: quote it", typeName(n.Type), n.Value)
		}
		v.SetString(n.Value)
		return nil
	case reflect.Bool:
		if n.Kind != KindScalar || n.Type != ScalarBool {
			return d.errorf(n, path, "want true or false, found %s", describe(n))
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != KindScalar || n.Type != ScalarInt {
			return d.errorf(n, path, "want an integer, found %s", describe(n))
		}
		i, err := strconv.ParseInt(n.Value, 0, v.Type().Bits())
		if err != nil {
			return d.errorf(n, path, "integer %s out of range", n.Value)
		}
		v.SetInt(i)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != KindScalar || n.Type != ScalarInt {
			return d.errorf(n, path, "want a non-negative integer, found %s", describe(n))
		}
		u, err := strconv.ParseUint(n.Value, 0, v.Type().Bits())
		if err != nil {
			return d.errorf(n, path, "want a non-negative integer of at most %d bits, found %s", v.Type().Bits(), n.Value)
		}
		v.SetUint(u)
		return nil
	case reflect.Float32, reflect.Float64:
		if n.Kind != KindScalar || (n.Type != ScalarFloat && n.Type != ScalarInt) {
			return d.errorf(n, path, "want a number, found %s", describe(n))
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return d.errorf(n, path, "want a finite number, found %s", n.Value)
		}
		v.SetFloat(f)
		return nil
	}
	return d.errorf(n, path, "cannot decode into %s", v.Type())
}

func (d *decoder) duration(n *Node, path string, v reflect.Value) error {
	if n.Kind != KindScalar || n.Type != ScalarString {
		return d.errorf(n, path, "want a duration such as \"1s\" or \"500ms\", found %s", describe(n))
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		return d.errorf(n, path, "want a duration such as \"1s\" or \"500ms\", found %q", n.Value)
	}
	if dur < 0 {
		return d.errorf(n, path, "negative duration %s", n.Value)
	}
	v.SetInt(int64(dur))
	return nil
}

func (d *decoder) structure(n *Node, path string, v reflect.Value) error {
	if n.Kind != KindMap {
		return d.errorf(n, path, "want a map of settings, found %s", kindName(n))
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("cfg"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	for i, key := range n.Keys {
		val := n.Values[i]
		p := join(path, key)
		fi, ok := fields[key]
		if !ok {
			return d.errorf(val, p, "unknown field (want %s)", strings.Join(names, ", "))
		}
		if err := d.decode(val, p, v.Field(fi)); err != nil {
			return err
		}
	}
	return nil
}

func kindName(n *Node) string {
	switch n.Kind {
	case KindMap:
		return "a map"
	case KindList:
		return "a list"
	case KindNull:
		return "nothing"
	}
	return describe(n)
}

func typeName(t ScalarType) string {
	switch t {
	case ScalarInt:
		return "integer"
	case ScalarFloat:
		return "number"
	case ScalarBool:
		return "boolean"
	}
	return "string"
}

func describe(n *Node) string {
	if n.Kind != KindScalar {
		return kindName(n)
	}
	if n.Type == ScalarString {
		return strconv.Quote(n.Value)
	}
	return typeName(n.Type) + " " + n.Value
}
