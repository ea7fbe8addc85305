package vecstore;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A where= filter (docs/filters.md, "The language") evaluated over a store's field columns
 * (docs/format.md, "Fields") into a row mask. Written from the two documents: a recursive-descent
 * parser of the grammar, then whole-column evaluation per node with the missing-value rules
 * (every comparison, in, not in and has is false on a missing value; is missing is true there; not
 * is the plain complement).
 *
 * Valid filters only: it does not reproduce vecstore's error messages (unknown fields, type
 * mismatches and syntax errors throw IllegalArgumentException).
 */
public final class Filter {

    /** One field's column, read from the store file at its datasets' offsets. */
    static final class Column {
        final String kind;
        final int count;
        long[] ints;          // int
        double[] floats;      // float
        byte[] bools;         // bool values (0/1)
        byte[] present;       // int, float, bool
        int[] codes;          // string: per row (-1 missing); tags: the concatenated codes
        long[] tagOffsets;    // tags (count + 1)
        byte[][] dictionary;  // string, tags: UTF-8 bytes, sorted by code point (= by unsigned bytes)

        Column(String kind, int count) {
            this.kind = kind;
            this.count = count;
        }

        boolean present(int row) {
            switch (kind) {
                case "string": return codes[row] >= 0;
                case "tags": return tagOffsets[row + 1] > tagOffsets[row];
                default: return present[row] != 0;
            }
        }

        /** Index of s in the dictionary, or -1. */
        int codeOf(byte[] s) {
            int lo = lowerBound(s);
            return lo < dictionary.length && compare(dictionary[lo], s) == 0 ? lo : -1;
        }

        /** Number of dictionary strings < s (bisect_left). */
        int lowerBound(byte[] s) {
            int lo = 0, hi = dictionary.length;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (compare(dictionary[mid], s) < 0) lo = mid + 1; else hi = mid;
            }
            return lo;
        }

        /** Number of dictionary strings <= s (bisect_right). */
        int upperBound(byte[] s) {
            int lo = 0, hi = dictionary.length;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (compare(dictionary[mid], s) <= 0) lo = mid + 1; else hi = mid;
            }
            return lo;
        }
    }

    /** UTF-8 byte order, which is Unicode code point order (Java's String.compareTo is UTF-16 order). */
    static int compare(byte[] a, byte[] b) {
        int n = Math.min(a.length, b.length);
        for (int i = 0; i < n; i++) {
            int c = Integer.compare(a[i] & 0xFF, b[i] & 0xFF);
            if (c != 0) return c;
        }
        return Integer.compare(a.length, b.length);
    }

    /** Every field of a store, read from the file (types: the groups' "type" attributes). */
    public static Map<String, Column> readColumns(ByteBuffer file, Map<String, Object> datasets,
                                                  Map<String, Object> types, int count) {
        Map<String, Column> out = new HashMap<>();
        for (Map.Entry<String, Object> e : types.entrySet()) {
            String name = e.getKey(), kind = (String) e.getValue(), p = "fields/" + name + "/";
            Column c = new Column(kind, count);
            switch (kind) {
                case "int": {
                    ByteBuffer v = Tier.dataset(file, datasets, p + "values");
                    c.ints = new long[count];
                    for (int r = 0; r < count; r++) c.ints[r] = v.getLong(8 * r);
                    c.present = bytes(Tier.dataset(file, datasets, p + "present"), count);
                    break;
                }
                case "float": {
                    ByteBuffer v = Tier.dataset(file, datasets, p + "values");
                    c.floats = new double[count];
                    for (int r = 0; r < count; r++) c.floats[r] = v.getDouble(8 * r);
                    c.present = bytes(Tier.dataset(file, datasets, p + "present"), count);
                    break;
                }
                case "bool":
                    c.bools = bytes(Tier.dataset(file, datasets, p + "values"), count);
                    c.present = bytes(Tier.dataset(file, datasets, p + "present"), count);
                    break;
                case "string":
                    c.codes = ints(Tier.dataset(file, datasets, p + "codes"));
                    c.dictionary = dictionary(file, datasets, p + "dictionary/");
                    break;
                case "tags": {
                    ByteBuffer o = Tier.dataset(file, datasets, p + "offsets");
                    c.tagOffsets = new long[count + 1];
                    for (int r = 0; r <= count; r++) c.tagOffsets[r] = o.getLong(8 * r);
                    c.codes = c.tagOffsets[count] == 0 ? new int[0] : ints(Tier.dataset(file, datasets, p + "codes"));
                    c.dictionary = dictionary(file, datasets, p + "dictionary/");
                    break;
                }
                default:
                    continue;   // a type this reader does not know: ignored (docs/format.md)
            }
            out.put(name, c);
        }
        return out;
    }

    private static byte[] bytes(ByteBuffer b, int n) {
        byte[] a = new byte[n];
        b.duplicate().get(a);
        return a;
    }

    private static int[] ints(ByteBuffer b) {
        int[] a = new int[b.remaining() / 4];
        for (int i = 0; i < a.length; i++) a[i] = b.getInt(4 * i);
        return a;
    }

    private static byte[][] dictionary(ByteBuffer file, Map<String, Object> datasets, String p) {
        ByteBuffer o = Tier.dataset(file, datasets, p + "offsets");
        int d = o.remaining() / 8 - 1;
        byte[][] out = new byte[d][];
        ByteBuffer data = d == 0 ? null : Tier.dataset(file, datasets, p + "data");
        for (int i = 0; i < d; i++) {
            int a = (int) o.getLong(8 * i), b = (int) o.getLong(8 * i + 8);
            out[i] = new byte[b - a];
            data.duplicate().position(a).get(out[i]);
        }
        return out;
    }

    // -- the tree ----------------------------------------------------------------------------------

    /** A literal: a String, a BigInteger (a NUMBER without '.' or exponent), a Double, or a Boolean. */
    interface Node {
        boolean[] eval(Map<String, Column> cols, int n);
    }

    private final String text;
    private final List<Object[]> tokens = new ArrayList<>();   // {kind, text, value, pos}
    private int at;

    private Filter(String text) {
        this.text = text;
        tokenize();
    }

    /** Parse a filter text into a tree. */
    public static Node parse(String text) {
        Filter f = new Filter(text);
        Node node = f.expr();
        if (!f.kind().equals("end")) throw f.fail("expected 'and', 'or' or the end");
        return node;
    }

    /** The rows of a part that satisfy a filter. */
    public static boolean[] mask(String text, Map<String, Column> cols, int n) {
        return parse(text).eval(cols, n);
    }

    private IllegalArgumentException fail(String what) {
        return new IllegalArgumentException("filter " + text + ": " + what + " at position " + tokens.get(at)[3]);
    }

    private void tokenize() {
        int i = 0, n = text.length();
        while (i < n) {
            char c = text.charAt(i);
            int start = i;
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == 0x0B) {   // ASCII white space
                i++;
            } else if (c == '\'') {
                StringBuilder s = new StringBuilder();
                i++;
                while (true) {
                    if (i >= n) throw new IllegalArgumentException("unclosed string at position " + start);
                    char d = text.charAt(i);
                    if (d == '\'') {
                        if (i + 1 < n && text.charAt(i + 1) == '\'') { s.append('\''); i += 2; continue; }
                        i++;
                        break;
                    }
                    s.append(d);
                    i++;
                }
                tokens.add(new Object[] {"string", text.substring(start, i), s.toString(), start});
            } else if (Character.isDigit(c) || c == '.' || (c == '-' && i + 1 < n
                    && (Character.isDigit(text.charAt(i + 1)) || text.charAt(i + 1) == '.'))) {
                // NUMBER = [-] (digits [. digits*] | . digits) [(e|E) [+|-] digits]
                if (c == '-') i++;
                boolean fraction = false;
                while (i < n && isDigit(text.charAt(i))) i++;
                if (i < n && text.charAt(i) == '.') { fraction = true; i++; }
                while (i < n && isDigit(text.charAt(i))) i++;
                if (i < n && (text.charAt(i) == 'e' || text.charAt(i) == 'E')) {
                    int j = i + 1;
                    if (j < n && (text.charAt(j) == '+' || text.charAt(j) == '-')) j++;
                    if (j < n && isDigit(text.charAt(j))) {
                        fraction = true;
                        i = j;
                        while (i < n && isDigit(text.charAt(i))) i++;
                    }
                }
                String raw = text.substring(start, i);
                Object value = fraction ? (Object) Double.parseDouble(raw) : new BigInteger(raw);
                tokens.add(new Object[] {"number", raw, value, start});
            } else if (Character.isLetter(c) && c < 128 || c == '_') {
                while (i < n && (isAsciiWord(text.charAt(i)))) i++;
                String raw = text.substring(start, i), low = raw.toLowerCase(java.util.Locale.ROOT);
                boolean kw = List.of("and", "or", "not", "in", "has", "true", "false").contains(low);
                tokens.add(new Object[] {kw ? "keyword" : "word", kw ? low : raw, raw, start});
            } else if ("!<>=".indexOf(c) >= 0) {
                String two = i + 1 < n ? text.substring(i, i + 2) : "";
                String op = two.equals("!=") || two.equals("<=") || two.equals(">=") ? two : String.valueOf(c);
                if (op.equals("!")) throw new IllegalArgumentException("unexpected '!' at position " + i);
                i += op.length();
                tokens.add(new Object[] {"op", op, op, start});
            } else if ("(),".indexOf(c) >= 0) {
                i++;
                tokens.add(new Object[] {"punct", String.valueOf(c), null, start});
            } else {
                throw new IllegalArgumentException("unexpected character at position " + i);
            }
        }
        tokens.add(new Object[] {"end", "", null, n});
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }

    private static boolean isAsciiWord(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || isDigit(c) || c == '_';
    }

    private String kind() {
        return (String) tokens.get(at)[0];
    }

    private boolean is(String kind, String t) {
        return kind().equals(kind) && tokens.get(at)[1].equals(t);
    }

    private Object[] take() {
        return tokens.get(at++);
    }

    private Node expr() {
        Node node = term();
        while (is("keyword", "or")) {
            take();
            Node l = node, r = term();
            node = (cols, n) -> { boolean[] a = l.eval(cols, n), b = r.eval(cols, n); for (int i = 0; i < n; i++) a[i] |= b[i]; return a; };
        }
        return node;
    }

    private Node term() {
        Node node = factor();
        while (is("keyword", "and")) {
            take();
            Node l = node, r = factor();
            node = (cols, n) -> { boolean[] a = l.eval(cols, n), b = r.eval(cols, n); for (int i = 0; i < n; i++) a[i] &= b[i]; return a; };
        }
        return node;
    }

    private Node factor() {
        if (is("keyword", "not")) {
            take();
            Node arg = factor();
            return (cols, n) -> { boolean[] a = arg.eval(cols, n); for (int i = 0; i < n; i++) a[i] = !a[i]; return a; };
        }
        if (is("punct", "(")) {
            take();
            Node node = expr();
            if (!is("punct", ")")) throw fail("expected ')'");
            take();
            return node;
        }
        return comparison();
    }

    private Node comparison() {
        Object[] tok = take();
        if (!tok[0].equals("word")) throw fail("expected a field name");
        String field = (String) tok[2];
        if (kind().equals("op")) {
            String op = (String) take()[1];
            Object value = literal();
            return (cols, n) -> compare(column(cols, field), op, value, n);
        }
        if (kind().equals("word") && ((String) tokens.get(at)[1]).equalsIgnoreCase("is")) {   // is [not] missing
            take();
            boolean not = false;
            if (is("keyword", "not")) {
                take();
                not = true;
            }
            if (!(kind().equals("word") && ((String) tokens.get(at)[1]).equalsIgnoreCase("missing"))) {
                throw fail("expected 'missing'");
            }
            take();
            boolean present = not;
            return (cols, n) -> {
                Column c = column(cols, field);
                boolean[] out = new boolean[n];
                for (int i = 0; i < n; i++) out[i] = c.present(i) == present;
                return out;
            };
        }
        if (is("keyword", "has")) {
            take();
            Object value = literal();
            return (cols, n) -> has(column(cols, field), (String) value, n);
        }
        boolean negated = false;
        if (is("keyword", "not")) {
            take();
            negated = true;
        }
        if (!is("keyword", "in")) throw fail("expected an operator");
        take();
        if (!is("punct", "(")) throw fail("expected '('");
        take();
        List<Object> values = new ArrayList<>();
        values.add(literal());
        while (is("punct", ",")) {
            take();
            values.add(literal());
        }
        if (!is("punct", ")")) throw fail("expected ')'");
        take();
        boolean neg = negated;
        return (cols, n) -> {
            Column c = column(cols, field);
            boolean[] hit = new boolean[n];
            for (Object v : values) {
                boolean[] h = compare(c, "=", v, n);
                for (int i = 0; i < n; i++) hit[i] |= h[i];
            }
            if (neg) for (int i = 0; i < n; i++) hit[i] = c.present(i) && !hit[i];
            return hit;
        };
    }

    private Object literal() {
        Object[] tok = take();
        if (tok[0].equals("string") || tok[0].equals("number")) return tok[2];
        if (tok[0].equals("keyword") && (tok[1].equals("true") || tok[1].equals("false"))) return tok[1].equals("true");
        throw fail("expected a value");
    }

    private static Column column(Map<String, Column> cols, String field) {
        Column c = cols.get(field);
        if (c == null) throw new IllegalArgumentException("unknown field " + field);
        return c;
    }

    // -- evaluation --------------------------------------------------------------------------------

    private static boolean test(int cmp, String op) {
        switch (op) {
            case "=": return cmp == 0;
            case "!=": return cmp != 0;
            case "<": return cmp < 0;
            case "<=": return cmp <= 0;
            case ">": return cmp > 0;
            default: return cmp >= 0;
        }
    }

    static boolean[] compare(Column c, String op, Object value, int n) {
        boolean[] out = new boolean[n];
        switch (c.kind) {
            case "int": {
                // exact comparison of an int64 with the number: an integer literal as it is, a
                // fraction or exponent as its binary64 value (docs/filters.md)
                BigDecimal v = value instanceof BigInteger ? new BigDecimal((BigInteger) value) : exact((Double) value);
                for (int r = 0; r < n; r++) {
                    if (c.present[r] == 0) continue;
                    out[r] = v == null ? infinite(op, (Double) value) : test(BigDecimal.valueOf(c.ints[r]).compareTo(v), op);
                }
                return out;
            }
            case "float": {
                double v = value instanceof BigInteger ? toDouble((BigInteger) value) : (Double) value;
                for (int r = 0; r < n; r++) {
                    if (c.present[r] == 0) continue;
                    double x = c.floats[r];
                    out[r] = test(x < v ? -1 : x > v ? 1 : 0, op);
                }
                return out;
            }
            case "bool": {
                int v = (Boolean) value ? 1 : 0;
                for (int r = 0; r < n; r++) out[r] = c.present[r] != 0 && test(Integer.compare(c.bools[r], v), op);
                return out;
            }
            case "string": {
                byte[] s = ((String) value).getBytes(StandardCharsets.UTF_8);
                // codes compare as their strings (the dictionary is sorted); lo/hi = strings < / <= value
                int lo = c.lowerBound(s), hi = c.upperBound(s);
                for (int r = 0; r < n; r++) {
                    int code = c.codes[r];
                    if (code < 0) continue;
                    int cmp = code < lo ? -1 : code >= hi ? 1 : 0;
                    out[r] = test(cmp, op);
                }
                return out;
            }
            default:
                throw new IllegalArgumentException("a tags field takes only 'has'");
        }
    }

    /** x op +-infinity for a finite x. */
    private static boolean infinite(String op, double inf) {
        return test(inf > 0 ? -1 : 1, op);
    }

    private static BigDecimal exact(double d) {
        return Double.isInfinite(d) ? null : new BigDecimal(d);
    }

    /** An integer literal as binary64: round to nearest even, beyond the range +-infinity. */
    private static double toDouble(BigInteger v) {
        return Double.parseDouble(v.toString());     // correctly rounded; Infinity beyond the range
    }

    static boolean[] has(Column c, String value, int n) {
        if (!c.kind.equals("tags")) throw new IllegalArgumentException("'has' tests a tags field");
        boolean[] out = new boolean[n];
        int code = c.codeOf(value.getBytes(StandardCharsets.UTF_8));
        if (code < 0) return out;
        for (int r = 0; r < n; r++) {
            for (long i = c.tagOffsets[r]; i < c.tagOffsets[r + 1]; i++) {
                if (c.codes[(int) i] == code) {
                    out[r] = true;
                    break;
                }
            }
        }
        return out;
    }
}
