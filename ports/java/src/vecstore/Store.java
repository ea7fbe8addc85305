package vecstore;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.zip.GZIPInputStream;

/**
 * One store file (no segments) searched as docs/format.md, "Search", says: queries rounded to
 * float32 and, in a cosine store, normalised with a double norm; scores in double from the decoded
 * rows; best first, ties to the lower row; one-stage or two-stage (scan, then rescore).
 */
public final class Store {
    public final String metric;
    public final int count;
    private final long[] ids;
    private final ByteBuffer file;
    private final Map<String, Object> datasets;
    private final Map<String, Object> tierFiles;    // tier name -> export-params document path
    private final Path dir;
    private final Map<String, Tier> tiers = new HashMap<>();
    private Map<String, Filter.Column> columns;     // filterable fields, read on first use

    /** The result of a search: ids (-1 = padding) and scores (NaN = padding), best first. */
    public static final class Result {
        public final long[] ids;
        public final double[] scores;

        Result(long[] ids, double[] scores) {
            this.ids = ids;
            this.scores = scores;
        }
    }

    /**
     * @param file      the store's bytes (mapped, or decompressed from .vs.gz)
     * @param datasets  path -> {offset, dtype, shape} (the dataset table of expected.json)
     * @param tierFiles tier name -> {"params_file": ...}
     */
    public Store(Path dir, ByteBuffer file, String metric, Map<String, Object> datasets, Map<String, Object> tierFiles) {
        this.dir = dir;
        this.file = file.order(ByteOrder.LITTLE_ENDIAN);
        this.metric = metric;
        this.datasets = datasets;
        this.tierFiles = tierFiles;
        ByteBuffer b = Tier.dataset(this.file, datasets, "ids");
        ids = new long[b.remaining() / 8];
        for (int r = 0; r < ids.length; r++) ids[r] = b.getLong(8 * r);
        count = ids.length;
    }

    /** The ids, in row order. */
    public long[] ids() {
        return ids.clone();
    }

    /** The rows a where= filter admits (docs/filters.md), over the fields whose types are given
     *  (the groups' "type" attributes; here from expected.json). */
    public boolean[] where(String filter, Map<String, Object> fieldTypes) {
        if (columns == null) columns = Filter.readColumns(file, datasets, fieldTypes, count);
        return Filter.mask(filter, columns, count);
    }

    /** Map STORE, or read STORE.gz decompressed when only that exists. */
    public static ByteBuffer readFile(Path path) throws IOException {
        if (Files.exists(path)) {
            try (FileChannel ch = FileChannel.open(path)) {
                return ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
            }
        }
        try (InputStream in = new GZIPInputStream(Files.newInputStream(Path.of(path + ".gz")))) {
            return ByteBuffer.wrap(in.readAllBytes());
        }
    }

    public Tier tier(String name) throws IOException {
        Tier t = tiers.get(name);
        if (t == null) {
            String paramsFile = (String) Json.obj(tierFiles.get(name)).get("params_file");
            Map<String, Object> doc = Json.obj(Json.parse(Files.readString(dir.resolve(paramsFile))));
            t = new Tier(name, doc, file, datasets);
            if (t.count() != count) throw new IllegalArgumentException(name + ": codes do not have one row per id");
            tiers.put(name, t);
        }
        return t;
    }

    /** The query as the store uses it: float32, and unit length (double norm) in a cosine store. */
    public float[] prepare(float[] q) {
        if (!metric.equals("cosine")) return q.clone();
        double s = 0.0;
        for (float v : q) s += (double) v * v;
        if (s == 0.0) throw new IllegalArgumentException("an all-zero query has no cosine");
        double norm = Math.sqrt(s);
        float[] out = new float[q.length];
        for (int j = 0; j < q.length; j++) out[j] = (float) (q[j] / norm);
        return out;
    }

    /** Higher is better: the similarity, or minus the l2 distance (so one sort serves all). */
    private double key(Tier t, float[] q, int row) {
        double[] x = t.decode(row);
        double dot = 0.0;
        for (int j = 0; j < x.length; j++) dot += q[j] * x[j];
        if (!metric.equals("l2")) return dot;
        double qq = 0.0;
        for (float v : q) qq += (double) v * v;
        return -Math.max(0.0, qq - 2.0 * dot + t.sqnorm(row));
    }

    private Integer[] best(Tier t, float[] q, Integer[] rows, int n) {
        double[] keys = new double[count];
        for (int r : rows) keys[r] = key(t, q, r);
        Integer[] order = rows.clone();
        Arrays.sort(order, (a, b) -> keys[a] != keys[b] ? Double.compare(keys[b], keys[a]) : Integer.compare(a, b));
        return Arrays.copyOf(order, Math.min(n, order.length));
    }

    private Integer[] quantisedBest(Tier t, float[] q, Integer[] rows, int n) {
        float[] keys = t.quantisedScores(q, metric.equals("l2"));
        Integer[] order = rows.clone();
        Arrays.sort(order, (a, b) -> keys[a] != keys[b] ? Float.compare(keys[b], keys[a]) : Integer.compare(a, b));
        return Arrays.copyOf(order, Math.min(n, order.length));
    }

    public Result search(float[] query, int k, String tierName, String rescore, double oversample) throws IOException {
        Integer[] all = new Integer[count];
        for (int r = 0; r < count; r++) all[r] = r;
        return searchRows(query, k, tierName, rescore, oversample, all);
    }

    /** The exact strategy's cost ratio (docs/format.md, "Filtered search"; vecstore/filters/strategy.py). */
    static final double EXACT_RATIO = 0.2;

    /** The strategy of a filtered search (docs/format.md, "Filtered search"), from the admitted count. */
    public String strategy(int admitted, int k, String tierName, String rescore) throws IOException {
        if (admitted == 0) return "none";
        if (rescore == null) return "filtered-scan";
        int dim = tier(tierName).dim;
        // admitted x dim (an exact integer) against the binary64 product EXACT_RATIO x rows x code bytes
        if (admitted <= k || (double) admitted * dim <= EXACT_RATIO * ((double) count * tier(tierName).codeBytes)) return "exact";
        return "filtered-two-stage";
    }

    /** A search among the rows a mask admits; the strategy is returned in strategyOut[0]. */
    public Result searchFiltered(float[] query, int k, String tierName, String rescore, double oversample,
                                 boolean[] admit, String[] strategyOut) throws IOException {
        int a = 0;
        for (boolean b : admit) if (b) a++;
        Integer[] rows = new Integer[a];
        for (int r = 0, i = 0; r < count; r++) if (admit[r]) rows[i++] = r;
        String strategy = strategy(a, k, tierName, rescore);
        strategyOut[0] = strategy;
        switch (strategy) {
            case "exact": return searchRows(query, k, rescore, null, 1.0, rows);
            case "filtered-scan": return searchRows(query, k, tierName, null, 1.0, rows);
            case "filtered-two-stage": return searchRows(query, k, tierName, rescore, oversample, rows);
            default: return searchRows(query, k, tierName, null, 1.0, rows);   // no row: padding
        }
    }

    /** One- or two-stage search among ``rows`` (ascending): w = min(rows, ceil(min(k, rows) * f)). */
    private Result searchRows(float[] query, int k, String tierName, String rescore, double oversample,
                              Integer[] rows) throws IOException {
        float[] q = prepare(query);
        Tier coarse = tier(tierName);
        int n = rows.length;
        int kk = Math.min(k, n);
        Tier scored = coarse;
        Integer[] top;
        if (rescore == null) {
            top = best(coarse, q, rows, kk);
        } else {
            int w = (int) Math.min(n, Math.ceil(kk * oversample));
            scored = tier(rescore);
            // a 4-bit PQ tier's candidates: the best w by its quantised scores (docs/format.md,
            // "Candidates of a 4-bit PQ tier"), ties to the lower row
            Integer[] candidates = coarse.isPq4() ? quantisedBest(coarse, q, rows, w) : best(coarse, q, rows, w);
            top = best(scored, q, candidates, kk);
        }
        long[] outIds = new long[k];
        double[] outScores = new double[k];
        Arrays.fill(outIds, -1);
        Arrays.fill(outScores, Double.NaN);
        for (int j = 0; j < top.length; j++) {
            outIds[j] = ids[top[j]];
            double v = key(scored, q, top[j]);
            outScores[j] = (float) (metric.equals("l2") ? -v : v);
        }
        return new Result(outIds, outScores);
    }
}
