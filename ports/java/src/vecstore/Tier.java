package vecstore;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import java.util.Map;

/**
 * One tier of a store: its pipeline (from export-params JSON) and its codes (mapped from the store
 * file at the dataset offset). Decodes a row with the formulas of docs/format.md, "Codecs":
 * an optional pca stage, then a float32, float16, int8 or pq (8-bit or 4-bit) code stage.
 */
public final class Tier {
    public final String name;
    public final int dim;
    public final int codeBytes;       // bytes per row of codes
    private final String codeStage;
    private final ByteBuffer codes;    // (count, codeBytes), little-endian
    private final float[] sqnorms;     // l2 stores, else null
    private final int width;           // the code stage's width (dim, or n_components after pca)
    private final float[] mean, components;               // pca, or null
    private final float[] scale, offset;                  // int8
    private final float[] codebooks;                      // pq (m, ksub, dsub)
    private final int m, nbits, dsub;

    public Tier(String name, Map<String, Object> params, ByteBuffer file, Map<String, Object> datasets) {
        this.name = name;
        if (!"vecstore-params".equals(params.get("format"))) throw new IllegalArgumentException("not a params document");
        Map<String, Object> codec = Json.obj(params.get("codec"));
        Map<String, Object> arrays = Json.obj(params.get("arrays"));
        dim = ((Double) codec.get("dim")).intValue();
        List<Object> stages = Json.list(codec.get("stages"));
        int first = 0;
        if (stages.size() == 2 && "pca".equals(Json.obj(stages.get(0)).get("id"))) {
            width = ((Double) Json.obj(stages.get(0)).get("n_components")).intValue();
            mean = floats(arrays, "0.mean", dim);
            components = floats(arrays, "0.components", width * dim);
            first = 1;
        } else if (stages.size() == 1) {
            width = dim;
            mean = null;
            components = null;
        } else {
            throw new IllegalArgumentException("unsupported pipeline " + codec);
        }
        Map<String, Object> stage = Json.obj(stages.get(first));
        codeStage = (String) stage.get("id");
        String p = first + ".";
        float[] sc = null, off = null, books = null;
        int mm = 0, nb = 0, ds = 0;
        switch (codeStage) {
            case "float32": codeBytes = 4 * width; break;
            case "float16": codeBytes = 2 * width; break;
            case "int8":
                codeBytes = width;
                sc = floats(arrays, p + "scale", width);
                off = floats(arrays, p + "offset", width);
                break;
            case "pq":
                mm = ((Double) stage.get("m")).intValue();
                nb = ((Double) stage.get("nbits")).intValue();
                ds = width / mm;
                books = floats(arrays, p + "codebooks", mm * (1 << nb) * ds);
                codeBytes = nb == 8 ? mm : (mm + 1) / 2;
                break;
            default: throw new IllegalArgumentException("unknown codec stage " + codeStage);
        }
        scale = sc; offset = off; codebooks = books; m = mm; nbits = nb; dsub = ds;
        codes = dataset(file, datasets, "tiers/" + name + "/codes");
        ByteBuffer sq = datasets.containsKey("tiers/" + name + "/sqnorms")
                ? dataset(file, datasets, "tiers/" + name + "/sqnorms") : null;
        if (sq != null) {
            sqnorms = new float[sq.remaining() / 4];
            for (int r = 0; r < sqnorms.length; r++) sqnorms[r] = sq.getFloat(4 * r);
        } else {
            sqnorms = null;
        }
    }

    private static float[] floats(Map<String, Object> arrays, String name, int size) {
        float[] a = Json.floats(Json.obj(arrays.get(name)).get("data"));
        if (a.length != size) throw new IllegalArgumentException(name + ": " + a.length + " values, expected " + size);
        return a;
    }

    /** The bytes of a dataset: offset and shape from the store's dataset table. */
    public static ByteBuffer dataset(ByteBuffer file, Map<String, Object> datasets, String path) {
        Map<String, Object> d = Json.obj(datasets.get(path));
        if (d == null) throw new IllegalArgumentException("no dataset " + path);
        long n = 1;
        for (Object s : Json.list(d.get("shape"))) n *= ((Double) s).longValue();
        String dtype = (String) d.get("dtype");
        int item = Integer.parseInt(dtype.substring(2));
        if (n == 0) return ByteBuffer.allocate(0).order(ByteOrder.LITTLE_ENDIAN);
        int off = ((Double) d.get("offset")).intValue();
        ByteBuffer b = file.duplicate().position(off).limit(off + (int) (n * item)).slice();
        return b.order(ByteOrder.LITTLE_ENDIAN);
    }

    public int count() {
        return codes.remaining() / codeBytes;
    }

    public float sqnorm(int row) {
        return sqnorms[row];
    }

    /** The decoded float vector of a row, as doubles (values are float32 except after pca). */
    public double[] decode(int row) {
        int base = row * codeBytes;
        float[] y = new float[width];
        switch (codeStage) {
            case "float32":
                for (int j = 0; j < width; j++) y[j] = codes.getFloat(base + 4 * j);
                break;
            case "float16":
                for (int j = 0; j < width; j++) y[j] = halfToFloat(codes.getShort(base + 2 * j));
                break;
            case "int8":
                for (int j = 0; j < width; j++) y[j] = offset[j] + scale[j] * (float) codes.get(base + j);
                break;
            default: // pq
                int ksub = 1 << nbits;
                for (int j = 0; j < m; j++) {
                    int c;
                    if (nbits == 8) {
                        c = codes.get(base + j) & 0xFF;
                    } else {
                        int b = codes.get(base + j / 2) & 0xFF;
                        c = (j % 2 == 0) ? (b & 0x0F) : (b >> 4);
                    }
                    System.arraycopy(codebooks, (j * ksub + c) * dsub, y, j * dsub, dsub);
                }
        }
        double[] x = new double[dim];
        if (mean == null) {
            for (int j = 0; j < dim; j++) x[j] = y[j];
        } else {
            for (int j = 0; j < dim; j++) {
                double v = mean[j];
                for (int i = 0; i < width; i++) v += (double) y[i] * components[i * dim + j];
                x[j] = v;
            }
        }
        return x;
    }

    /** Whether the code stage is 4-bit PQ (two-stage searches rank its candidates by quantised scores). */
    public boolean isPq4() {
        return "pq".equals(codeStage) && nbits == 4;
    }

    /**
     * The quantised scores of every row (docs/format.md, "Candidates of a 4-bit PQ tier"), for the
     * query as the store uses it (float32; cosine: normalised): folded into code space (l2: times 2;
     * a pca stage: projected, its constant q . mean left out, as it moves every row alike), float32
     * lookup tables, levels 0..127 with one scale for all sub-quantizers, then per row
     * float32(base + S / scale) and, for l2, minus sqnorms[row] in float32.
     */
    public float[] quantisedScores(float[] query, boolean l2) {
        float[] q = new float[width];
        if (mean == null) {
            for (int j = 0; j < width; j++) q[j] = l2 ? query[j] * 2.0f : query[j];
        } else {
            for (int i = 0; i < width; i++) {
                double v = 0.0;
                for (int j = 0; j < dim; j++) v += (double) (l2 ? query[j] * 2.0f : query[j]) * components[i * dim + j];
                q[i] = (float) v;
            }
        }
        // float32 tables t[j][c] = q_j . codebooks[j, c] (summation order is unspecified: here in
        // double, rounded once to float32)
        float[] t = new float[m * 16];
        for (int j = 0; j < m; j++) {
            for (int c = 0; c < 16; c++) {
                double v = 0.0;
                for (int s = 0; s < dsub; s++) v += (double) q[j * dsub + s] * codebooks[(j * 16 + c) * dsub + s];
                t[j * 16 + c] = (float) v;
            }
        }
        // quantisation, in double
        double[] lo = new double[m];
        double base = 0.0, widest = 0.0;
        for (int j = 0; j < m; j++) {
            double l = t[j * 16], h = l;
            for (int c = 1; c < 16; c++) {
                l = Math.min(l, t[j * 16 + c]);
                h = Math.max(h, t[j * 16 + c]);
            }
            lo[j] = l;
            base += l;
            widest = Math.max(widest, h - l);
        }
        double scale = widest > 0 ? 127.0 / widest : 1.0;
        int[] level = new int[m * 16];
        for (int j = 0; j < m; j++) {
            for (int c = 0; c < 16; c++) {
                // (t - lo) * scale + 0.5 rounded once (a fused multiply-add), as vecstore computes it
                level[j * 16 + c] = (int) Math.min(127.0, Math.floor(Math.fma(t[j * 16 + c] - lo[j], scale, 0.5)));
            }
        }
        int n = count();
        float[] out = new float[n];
        for (int r = 0; r < n; r++) {
            long sum = 0;
            for (int j = 0; j < m; j++) {
                int b = codes.get(r * codeBytes + j / 2) & 0xFF;
                sum += level[j * 16 + ((j % 2 == 0) ? (b & 0x0F) : (b >> 4))];
            }
            float s = (float) (base + sum / scale);
            out[r] = l2 ? s - sqnorms[r] : s;
        }
        return out;
    }

    /** IEEE 754 binary16 to float (Java 17 has no Float.float16ToFloat). */
    static float halfToFloat(short h) {
        int bits = h & 0xFFFF;
        int sign = (bits >>> 15) << 31;
        int exp = (bits >>> 10) & 0x1F;
        int mant = bits & 0x3FF;
        if (exp == 0x1F) return Float.intBitsToFloat(sign | 0x7F800000 | (mant << 13));
        if (exp == 0) {
            float v = mant * 0x1p-24f;     // subnormal (or zero): exact in float
            return sign != 0 ? -v : v;
        }
        return Float.intBitsToFloat(sign | ((exp - 15 + 127) << 23) | (mant << 13));
    }
}
