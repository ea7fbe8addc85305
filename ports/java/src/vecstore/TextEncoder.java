package vecstore;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The text encoders of docs/encoders.md, read from an export-encoder JSON document: the
 * vecstore-words tokenizer, IDF-weighted word vectors ("wordvec") and an Elman RNN ("elman").
 * Sums and states in double from the float32 parameters; the unit vector rounded to float once.
 */
public final class TextEncoder {
    private static final Pattern TOKEN = Pattern.compile("[\\p{L}\\p{M}\\p{N}]+");

    public final String kind;
    public final int dim;
    private final String output;
    private final Map<String, Integer> rows = new HashMap<>();
    private final float[] embedding;   // (V, dim)
    private final float[] idf;         // (V,) or null
    private final float[] recurrent;   // (dim, dim), elman
    private final float[] bias;        // (dim,), elman

    /** The result of encoding one text: its tokens, unknown words, and vector (all zero: no word). */
    public static final class Encoded {
        public final List<String> tokens;
        public final List<String> unknown;
        public final float[] vector;

        Encoded(List<String> tokens, List<String> unknown, float[] vector) {
            this.tokens = tokens;
            this.unknown = unknown;
            this.vector = vector;
        }
    }

    public TextEncoder(Map<String, Object> doc) {
        if (!"vecstore-encoder".equals(doc.get("format"))) throw new IllegalArgumentException("not an encoder document");
        Map<String, Object> cfg = Json.obj(doc.get("config"));
        Map<String, Object> tok = Json.obj(cfg.get("tokenizer"));
        if (!"vecstore-words".equals(tok.get("id")) || ((Double) tok.get("version")) != 1.0) {
            throw new IllegalArgumentException("unknown tokenizer " + tok);
        }
        if (!"l2".equals(cfg.get("normalize"))) throw new IllegalArgumentException("normalize must be l2");
        kind = (String) cfg.get("kind");
        dim = ((Double) cfg.get("dim")).intValue();
        output = (String) cfg.get("output");
        List<Object> vocab = Json.list(doc.get("vocab"));
        for (int r = 0; r < vocab.size(); r++) rows.putIfAbsent((String) vocab.get(r), r);
        Map<String, Object> arrays = Json.obj(doc.get("arrays"));
        embedding = array(arrays, "embedding", vocab.size() * dim);
        if (kind.equals("wordvec")) {
            if (!"mean".equals(output)) throw new IllegalArgumentException("wordvec output must be mean");
            idf = "idf".equals(cfg.get("weighting")) ? array(arrays, "idf", vocab.size()) : null;
            recurrent = null;
            bias = null;
        } else if (kind.equals("elman")) {
            if (!"tanh".equals(cfg.get("nonlinearity"))) throw new IllegalArgumentException("nonlinearity must be tanh");
            if (!output.equals("last") && !output.equals("mean")) throw new IllegalArgumentException("bad output");
            idf = null;
            recurrent = array(arrays, "recurrent", dim * dim);
            bias = array(arrays, "bias", dim);
        } else {
            throw new IllegalArgumentException("unknown encoder kind " + kind);
        }
    }

    private static float[] array(Map<String, Object> arrays, String name, int size) {
        Map<String, Object> entry = Json.obj(arrays.get(name));
        if (entry == null || !"float32".equals(entry.get("dtype"))) throw new IllegalArgumentException("array " + name);
        float[] a = Json.floats(entry.get("data"));
        if (a.length != size) throw new IllegalArgumentException("array " + name + " has " + a.length + " values");
        return a;
    }

    /** docs/encoders.md section 1: NFKC, full lowercase (root locale), maximal runs of L, M, N. */
    public static List<String> tokenize(String text) {
        String norm = Normalizer.normalize(text, Normalizer.Form.NFKC).toLowerCase(Locale.ROOT);
        List<String> out = new ArrayList<>();
        Matcher m = TOKEN.matcher(norm);
        while (m.find()) out.add(m.group());
        return out;
    }

    public Encoded encode(String text) {
        List<String> tokens = tokenize(text);
        List<Integer> known = new ArrayList<>();
        LinkedHashSet<String> unknown = new LinkedHashSet<>();
        for (String t : tokens) {
            Integer r = rows.get(t);
            if (r == null) unknown.add(t);
            else known.add(r);
        }
        double[] y = kind.equals("wordvec") ? weightedSum(known) : elman(known);
        double n = 0.0;
        for (double v : y) n += v * v;
        float[] out = new float[dim];
        if (n > 0.0) {
            double inv = 1.0 / Math.sqrt(n);
            for (int j = 0; j < dim; j++) out[j] = (float) (y[j] * inv);
        }
        return new Encoded(tokens, new ArrayList<>(unknown), out);
    }

    private double[] weightedSum(List<Integer> known) {
        double[] s = new double[dim];
        for (int w : known) {
            double a = idf == null ? 1.0 : idf[w];
            for (int j = 0; j < dim; j++) s[j] += a * (double) embedding[w * dim + j];
        }
        return s;
    }

    private double[] elman(List<Integer> known) {
        double[] prev = new double[dim];
        double[] next = new double[dim];
        double[] sum = new double[dim];
        for (int w : known) {
            for (int r = 0; r < dim; r++) {
                double s = (double) embedding[w * dim + r] + (double) bias[r];
                for (int c = 0; c < dim; c++) s += (double) recurrent[r * dim + c] * prev[c];
                next[r] = Math.tanh(s);
            }
            for (int r = 0; r < dim; r++) {
                prev[r] = next[r];
                sum[r] += next[r];
            }
        }
        return output.equals("mean") ? sum : prev;
    }
}
