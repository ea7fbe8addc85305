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
        float[] q = prepare(query);
        Tier coarse = tier(tierName);
        Integer[] all = new Integer[count];
        for (int r = 0; r < count; r++) all[r] = r;
        int kk = Math.min(k, count);
        Tier scored = coarse;
        Integer[] top;
        if (rescore == null) {
            top = best(coarse, q, all, kk);
        } else {
            int w = (int) Math.min(count, Math.ceil(kk * oversample));
            scored = tier(rescore);
            // a 4-bit PQ tier's candidates: the best w by its quantised scores (docs/format.md,
            // "Candidates of a 4-bit PQ tier"), ties to the lower row
            Integer[] candidates = coarse.isPq4() ? quantisedBest(coarse, q, all, w) : best(coarse, q, all, w);
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
