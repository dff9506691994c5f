package export

import (
	"encoding/json"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/mlbpf/mlbpf/model"
)

// textFlushSize is how many bytes of rows the JSONL and CSV encoders
// buffer before writing.
const textFlushSize = 64 << 10

// textBuffer is the buffered output the JSONL and CSV encoders share.
type textBuffer struct {
	w   io.Writer
	buf []byte
}

func (t *textBuffer) flush() error {
	if len(t.buf) == 0 {
		return nil
	}
	_, err := t.w.Write(t.buf)
	t.buf = t.buf[:0]
	return err
}

// writeRows appends one row per record of d with appendRow, flushing
// whenever textFlushSize bytes are buffered.
func (t *textBuffer) writeRows(d *model.Dataset, appendRow func(b, rec []byte, offset uint64) []byte) error {
	for i := range d.Len() {
		t.buf = appendRow(t.buf, d.Record(i), d.PortionOffset+uint64(i))
		if len(t.buf) >= textFlushSize {
			if err := t.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonlEncoder writes one JSON object per line, keys in column order.
// Integers are JSON numbers written exactly, uint64 ones included.
type jsonlEncoder struct {
	textBuffer
	s    *Schema
	keys [][]byte // `{"stream_offset":`, `,"ts_ns":`, …
}

func newJSONLEncoder(w io.Writer, s *Schema) *jsonlEncoder {
	e := &jsonlEncoder{textBuffer: textBuffer{w: w, buf: make([]byte, 0, textFlushSize+4096)}, s: s}
	for i, c := range s.columns {
		sep := byte(',')
		if i == 0 {
			sep = '{'
		}
		key := appendJSONString([]byte{sep}, c.Name)
		e.keys = append(e.keys, append(key, ':'))
	}
	return e
}

func (e *jsonlEncoder) writeRecords(d *model.Dataset) error {
	return e.writeRows(d, e.appendRow)
}

func (e *jsonlEncoder) appendRow(b, rec []byte, offset uint64) []byte {
	for i := range e.s.plans {
		p := &e.s.plans[i]
		b = append(b, e.keys[i]...)
		switch p.src {
		case srcInt:
			b = appendInt(b, p, rec)
		case srcCString:
			b = appendJSONBytes(b, p.cstring(rec))
		case srcStreamOffset:
			b = strconv.AppendUint(b, offset, 10)
		default:
			// Arm and mode names need no escaping.
			b = append(b, '"')
			b = append(b, p.name(rec)...)
			b = append(b, '"')
		}
	}
	return append(b, '}', '\n')
}

func (e *jsonlEncoder) close() error { return e.flush() }

func appendInt(b []byte, p *plan, rec []byte) []byte {
	switch {
	case p.typ == TypeBool:
		return strconv.AppendBool(b, p.uint(rec) != 0)
	case p.signed:
		return strconv.AppendInt(b, p.int(rec), 10)
	default:
		return strconv.AppendUint(b, p.uint(rec), 10)
	}
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// appendJSONBytes appends s, valid UTF-8, as a JSON string.
func appendJSONBytes(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// csvEncoder writes a header line of column names, then one line per
// record, as RFC 4180 and encoding/csv read them: fields are quoted only
// when they hold a comma, a quote, a line break or leading or trailing
// space, which only strings can.
type csvEncoder struct {
	textBuffer
	s *Schema
}

func newCSVEncoder(w io.Writer, s *Schema) *csvEncoder {
	e := &csvEncoder{textBuffer: textBuffer{w: w, buf: make([]byte, 0, textFlushSize+4096)}, s: s}
	for i, c := range s.columns {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = appendCSVField(e.buf, []byte(c.Name))
	}
	e.buf = append(e.buf, '\n')
	return e
}

func (e *csvEncoder) writeRecords(d *model.Dataset) error {
	return e.writeRows(d, e.appendRow)
}

func (e *csvEncoder) appendRow(b, rec []byte, offset uint64) []byte {
	for i := range e.s.plans {
		p := &e.s.plans[i]
		if i > 0 {
			b = append(b, ',')
		}
		switch p.src {
		case srcInt:
			b = appendInt(b, p, rec)
		case srcCString:
			b = appendCSVField(b, p.cstring(rec))
		case srcStreamOffset:
			b = strconv.AppendUint(b, offset, 10)
		default:
			b = append(b, p.name(rec)...)
		}
	}
	return append(b, '\n')
}

func (e *csvEncoder) close() error { return e.flush() }

func appendCSVField(b, s []byte) []byte {
	if !csvNeedsQuotes(s) {
		return append(b, s...)
	}
	b = append(b, '"')
	for _, c := range s {
		if c == '"' {
			b = append(b, '"')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

func csvNeedsQuotes(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	if string(s) == `\.` {
		// A line of its own ends data in PostgreSQL's COPY.
		return true
	}
	for _, c := range s {
		if c == ',' || c == '"' || c == '\r' || c == '\n' {
			return true
		}
	}
	first, _ := utf8.DecodeRune(s)
	last, _ := utf8.DecodeLastRune(s)
	return isSpace(first) || isSpace(last)
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\v', '\f', 0x85, 0xa0:
		return true
	}
	return false
}
