package vecstore;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Runs the query side of conformance/v1/expected.json: every one-stage and two-stage search of a
 * single-file store, and every encoder text (tokens, unknown words, vector, text search). Prints one
 * JSON line per case and a summary line; exits 1 when an id or token differs or a tolerance is broken.
 *
 * Usage: java -cp CLASSES vecstore.Conformance conformance/v1
 */
public final class Conformance {
    private final Path dir;
    private final Map<String, Object> expected;
    private final Map<String, Store> stores = new HashMap<>();
    private final StringBuilder out = new StringBuilder();
    private int cases, idMismatches, skipped, tokenMismatches, strategyMismatches, filterCases, filterMismatches;
    private double maxScoreError, maxVectorError;
    private int bitIdenticalVectors, vectors;

    private Conformance(Path dir) throws IOException {
        this.dir = dir;
        this.expected = Json.obj(Json.parse(Files.readString(dir.resolve("expected.json"))));
    }

    private Store store(String name) throws IOException {
        Store s = stores.get(name);
        if (s == null) {
            Map<String, Object> entry = Json.obj(Json.obj(expected.get("stores")).get(name));
            s = new Store(dir, Store.readFile(dir.resolve(name)), (String) entry.get("metric"),
                          Json.obj(entry.get("datasets")), Json.obj(entry.get("tiers")));
            stores.put(name, s);
        }
        return s;
    }

    private float[] query(String file, int index) throws IOException {
        Map<String, Object> doc = Json.obj(Json.parse(Files.readString(dir.resolve(file))));
        return Json.floats(Json.list(doc.get("vectors")).get(index));
    }

    private void compare(List<Object> wantIds, List<Object> wantScores, Store.Result got) {
        cases++;
        for (int j = 0; j < wantIds.size(); j++) {
            if (((Double) wantIds.get(j)).longValue() != got.ids[j]) {
                idMismatches++;
                break;
            }
        }
        for (int j = 0; j < wantScores.size(); j++) {
            Object w = wantScores.get(j);
            if (w == null || Double.isNaN(got.scores[j])) continue;
            maxScoreError = Math.max(maxScoreError, Math.abs((Double) w - got.scores[j]));
        }
    }

    private static List<Object> longs(long[] a) {
        List<Object> l = new ArrayList<>();
        for (long v : a) l.add(v);
        return l;
    }

    private static List<Object> doubles(double[] a) {
        List<Object> l = new ArrayList<>();
        for (double v : a) l.add(v);
        return l;
    }

    private void emit(Map<String, Object> line) {
        Json.write(out, line);
        out.append('\n');
    }

    private void searches() throws IOException {
        List<Object> all = Json.list(expected.get("searches"));
        for (int i = 0; i < all.size(); i++) {
            Map<String, Object> c = Json.obj(all.get(i));
            String storeName = (String) c.get("store");
            if (Json.obj(Json.obj(expected.get("stores")).get(storeName)).containsKey("segments")) {
                skipped++;   // this port reads single files; segments and deletions are not implemented
                continue;
            }
            float[] q = query((String) c.getOrDefault("query_file", "queries.json"), ((Double) c.get("query")).intValue());
            Object f = c.get("oversample");
            Store s = store(storeName);
            int k = ((Double) c.get("k")).intValue();
            String strategy = null;
            Store.Result r;
            if (c.containsKey("strategy")) {    // a filtered search: where= and/or allow=
                String[] used = new String[1];
                r = s.searchFiltered(q, k, (String) c.get("tier"), (String) c.get("rescore"), f == null ? 1.0 : (Double) f,
                                     admitted(storeName, (String) c.get("where"), c.get("allow")), used);
                strategy = used[0];
                if (!strategy.equals(c.get("strategy"))) strategyMismatches++;
            } else {
                r = s.search(q, k, (String) c.get("tier"), (String) c.get("rescore"), f == null ? 1.0 : (Double) f);
            }
            compare(Json.list(c.get("ids")), Json.list(c.get("scores")), r);
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("kind", "search");
            line.put("index", i);
            if (strategy != null) line.put("strategy", strategy);
            line.put("ids", longs(r.ids));
            line.put("scores", doubles(r.scores));
            emit(line);
        }
    }

    /** The rows of a store that a filter admits: where= evaluated on its fields, AND allow= ids
     *  (ids not in the store are ignored); either may be null. */
    private boolean[] admitted(String storeName, String where, Object allow) throws IOException {
        Store s = store(storeName);
        boolean[] mask;
        if (where != null) {
            Map<String, Object> types = Json.obj(Json.obj(Json.obj(expected.get("stores")).get(storeName)).get("fields"));
            mask = s.where(where, types);
        } else {
            mask = new boolean[s.count];
            java.util.Arrays.fill(mask, true);
        }
        if (allow != null) {
            java.util.Set<Long> ids = new java.util.HashSet<>();
            for (Object v : Json.list(allow)) ids.add(((Double) v).longValue());
            long[] rowIds = s.ids();
            for (int r = 0; r < mask.length; r++) mask[r] &= ids.contains(rowIds[r]);
        }
        return mask;
    }

    /** expected.json "filters": the ids each filter admits. */
    private void filters() throws IOException {
        if (!expected.containsKey("filters")) return;
        List<Object> all = Json.list(expected.get("filters"));
        for (int i = 0; i < all.size(); i++) {
            Map<String, Object> c = Json.obj(all.get(i));
            String storeName = (String) c.get("store");
            boolean[] mask = admitted(storeName, (String) c.get("where"), c.get("allow"));
            long[] rowIds = store(storeName).ids();
            List<Object> got = new ArrayList<>();
            for (int r = 0; r < mask.length; r++) if (mask[r]) got.add(rowIds[r]);
            got.sort((a, b) -> Long.compare((Long) a, (Long) b));
            List<Object> want = Json.list(c.get("admitted"));
            boolean same = want.size() == got.size();
            for (int j = 0; same && j < want.size(); j++) same = ((Double) want.get(j)).longValue() == (Long) got.get(j);
            filterCases++;
            if (!same) filterMismatches++;
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("kind", "filter");
            line.put("index", i);
            line.put("admitted", got);
            emit(line);
        }
    }

    private void encoders() throws IOException {
        for (Map.Entry<String, Object> s : Json.obj(expected.get("stores")).entrySet()) {
            Map<String, Object> entry = Json.obj(s.getValue());
            if (!entry.containsKey("encoders")) continue;
            for (Map.Entry<String, Object> e : Json.obj(entry.get("encoders")).entrySet()) {
                Map<String, Object> encEntry = Json.obj(e.getValue());
                TextEncoder enc = new TextEncoder(Json.obj(Json.parse(
                        Files.readString(dir.resolve((String) encEntry.get("file"))))));
                List<Object> texts = Json.list(encEntry.get("texts"));
                for (int j = 0; j < texts.size(); j++) {
                    Map<String, Object> t = Json.obj(texts.get(j));
                    TextEncoder.Encoded got = enc.encode((String) t.get("text"));
                    if (!got.tokens.equals(t.get("tokens")) || !got.unknown.equals(t.get("unknown"))) tokenMismatches++;
                    float[] want = Json.floats(t.get("vector"));
                    boolean same = true;
                    List<Object> vec = new ArrayList<>();
                    for (int d = 0; d < want.length; d++) {
                        maxVectorError = Math.max(maxVectorError, Math.abs((double) want[d] - got.vector[d]));
                        same &= Float.floatToIntBits(want[d]) == Float.floatToIntBits(got.vector[d]);
                        vec.add((double) got.vector[d]);
                    }
                    vectors++;
                    if (same) bitIdenticalVectors++;
                    Map<String, Object> line = new LinkedHashMap<>();
                    line.put("kind", "encode");
                    line.put("store", s.getKey());
                    line.put("encoder", e.getKey());
                    line.put("text", j);
                    line.put("tokens", new ArrayList<Object>(got.tokens));
                    line.put("unknown", new ArrayList<Object>(got.unknown));
                    line.put("vector", vec);
                    if (t.containsKey("ids")) {
                        Store.Result r = store(s.getKey()).search(got.vector, ((Double) t.get("k")).intValue(), "raw", null, 1.0);
                        compare(Json.list(t.get("ids")), Json.list(t.get("scores")), r);
                        line.put("ids", longs(r.ids));
                        line.put("scores", doubles(r.scores));
                    }
                    emit(line);
                }
            }
        }
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 1) {
            System.err.println("usage: java vecstore.Conformance CONFORMANCE_DIR   (e.g. conformance/v1)");
            System.exit(2);
        }
        Conformance c = new Conformance(Path.of(args[0]));
        c.filters();
        c.searches();
        c.encoders();
        Map<String, Object> tol = Json.obj(c.expected.get("tolerance"));
        double scoreTol = (Double) tol.get("score_abs"), vectorTol = (Double) tol.get("vector_abs");
        Map<String, Object> summary = new LinkedHashMap<>();
        summary.put("kind", "summary");
        summary.put("cases", c.cases);
        summary.put("ids_identical", c.cases - c.idMismatches);
        summary.put("skipped_segment_cases", c.skipped);
        summary.put("max_abs_score_error", c.maxScoreError);
        summary.put("vectors", c.vectors);
        summary.put("bit_identical_vectors", c.bitIdenticalVectors);
        summary.put("max_abs_vector_error", c.maxVectorError);
        summary.put("token_mismatches", c.tokenMismatches);
        summary.put("filters", c.filterCases);
        summary.put("filter_mismatches", c.filterMismatches);
        summary.put("strategy_mismatches", c.strategyMismatches);
        boolean ok = c.idMismatches == 0 && c.tokenMismatches == 0 && c.maxScoreError <= scoreTol
                && c.filterMismatches == 0 && c.strategyMismatches == 0
                && c.maxVectorError <= vectorTol;
        summary.put("ok", ok);
        c.emit(summary);
        System.out.print(c.out);
        System.exit(ok ? 0 : 1);
    }
}
