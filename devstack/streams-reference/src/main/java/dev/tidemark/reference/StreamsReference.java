package dev.tidemark.reference;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.SlidingWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;

/**
 * Kafka Streams' final windowed counts for records read from stdin, one JSON object a line.
 *
 * <p>A run is a spec line, then records, then an empty line (or the next spec line, or the end
 * of input):
 *
 * <pre>
 * {"type":"tumbling","size":10000,"grace":0}
 * {"type":"hopping","size":10000,"step":4000,"grace":2000}
 * {"type":"session","gap":5000,"grace":4000}
 * {"type":"sliding","size":5000,"grace":1000}
 * {"key":"a","ts":1234}
 * </pre>
 *
 * <p>Each run builds {@code stream.groupByKey().windowedBy(...).count()
 * .suppress(Suppressed.untilWindowCloses(unbounded())).toStream()} in a fresh {@link
 * TopologyTestDriver} (record cache off, so nothing depends on when caches flush), pipes the
 * records in order with their timestamps, and once the run's input is complete prints each
 * final result, {@code {"key":"a","start":0,"end":10000,"count":3}} (a session's start and end
 * are its first and last event time), then {@code {"done":true,"records":N}}. Several runs may
 * share one JVM; the caller writes a whole run before reading its results.
 */
public final class StreamsReference {
  private static final Pattern FIELD =
      Pattern.compile("\"(\\w+)\"\\s*:\\s*(?:\"((?:[^\"\\\\]|\\\\.)*)\"|(-?\\d+))");

  private StreamsReference() {}

  public static void main(String[] args) throws IOException {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    Run run = null;
    String line;
    int number = 0;
    while ((line = in.readLine()) != null) {
      number++;
      line = line.strip();
      if (line.isEmpty()) {
        if (run != null) {
          run.finish(out);
          run = null;
        }
        continue;
      }
      Map<String, String> fields = parse(line, number);
      if (fields.containsKey("type")) {
        if (run != null) {
          run.finish(out);
        }
        run = new Run(fields);
      } else if (run == null) {
        throw new IllegalArgumentException("line " + number + ": a record before any spec line");
      } else {
        run.pipe(require(fields, "key", number), Long.parseLong(require(fields, "ts", number)));
      }
    }
    if (run != null) {
      run.finish(out);
    }
    out.flush();
  }

  /** The fields of a flat JSON object whose values are strings or integers. */
  static Map<String, String> parse(String line, int number) {
    if (!line.startsWith("{") || !line.endsWith("}")) {
      throw new IllegalArgumentException("line " + number + ": not a JSON object: " + line);
    }
    Map<String, String> fields = new HashMap<>();
    Matcher m = FIELD.matcher(line);
    while (m.find()) {
      fields.put(m.group(1), m.group(2) != null ? unescape(m.group(2)) : m.group(3));
    }
    return fields;
  }

  private static String require(Map<String, String> fields, String name, int number) {
    String value = fields.get(name);
    if (value == null) {
      throw new IllegalArgumentException("line " + number + ": no \"" + name + "\"");
    }
    return value;
  }

  private static String unescape(String s) {
    StringBuilder b = new StringBuilder(s.length());
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c != '\\' || i + 1 == s.length()) {
        b.append(c);
        continue;
      }
      char e = s.charAt(++i);
      switch (e) {
        case 'n' -> b.append('\n');
        case 't' -> b.append('\t');
        case 'u' -> {
          b.append((char) Integer.parseInt(s.substring(i + 1, i + 5), 16));
          i += 4;
        }
        default -> b.append(e); // \" \\ \/
      }
    }
    return b.toString();
  }

  private static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }

  private static long millis(Map<String, String> spec, String name) {
    String value = spec.get(name);
    if (value == null) {
      throw new IllegalArgumentException("spec " + spec + " needs \"" + name + "\"");
    }
    return Long.parseLong(value);
  }

  /** One topology in one test driver. */
  private static final class Run {
    private final Path stateDir;
    private final TopologyTestDriver driver;
    private final TestInputTopic<String, String> input;
    private final List<String> results = new ArrayList<>();
    private int records;

    Run(Map<String, String> spec) {
      StreamsBuilder builder = new StreamsBuilder();
      KGroupedStream<String, String> grouped =
          builder.stream("in", Consumed.with(Serdes.String(), Serdes.String()))
              .groupByKey(Grouped.with(Serdes.String(), Serdes.String()));
      long grace = spec.containsKey("grace") ? millis(spec, "grace") : 0;
      KTable<Windowed<String>, Long> counts =
          switch (spec.get("type")) {
            case "tumbling" ->
                grouped
                    .windowedBy(
                        TimeWindows.ofSizeAndGrace(
                            Duration.ofMillis(millis(spec, "size")), Duration.ofMillis(grace)))
                    .count();
            case "hopping" ->
                grouped
                    .windowedBy(
                        TimeWindows.ofSizeAndGrace(
                                Duration.ofMillis(millis(spec, "size")), Duration.ofMillis(grace))
                            .advanceBy(Duration.ofMillis(millis(spec, "step"))))
                    .count();
            case "session" ->
                grouped
                    .windowedBy(
                        SessionWindows.ofInactivityGapAndGrace(
                            Duration.ofMillis(millis(spec, "gap")), Duration.ofMillis(grace)))
                    .count();
            case "sliding" ->
                grouped
                    .windowedBy(
                        SlidingWindows.ofTimeDifferenceAndGrace(
                            Duration.ofMillis(millis(spec, "size")), Duration.ofMillis(grace)))
                    .count();
            default -> throw new IllegalArgumentException("unknown window type in " + spec);
          };
      counts
          .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
          .toStream()
          .foreach(
              (windowed, count) ->
                  results.add(
                      "{\"key\":"
                          + quote(windowed.key())
                          + ",\"start\":"
                          + windowed.window().start()
                          + ",\"end\":"
                          + windowed.window().end()
                          + ",\"count\":"
                          + count
                          + "}"));

      try {
        stateDir = Files.createTempDirectory("tidemark-streams-reference");
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      Properties props = new Properties();
      props.put(StreamsConfig.APPLICATION_ID_CONFIG, "tidemark-streams-reference");
      props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
      props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
      props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
      driver = new TopologyTestDriver(builder.build(), props);
      input = driver.createInputTopic("in", new StringSerializer(), new StringSerializer());
    }

    void pipe(String key, long ts) {
      input.pipeInput(key, "1", ts); // count ignores the value, but drops a null one
      records++;
    }

    void finish(PrintStream out) {
      driver.close();
      deleteTree(stateDir);
      for (String result : results) {
        out.println(result);
      }
      out.println("{\"done\":true,\"records\":" + records + "}");
      out.flush();
    }

    private static void deleteTree(Path root) {
      try (Stream<Path> paths = Files.walk(root)) {
        paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      } catch (IOException e) {
        // a temporary directory left behind is harmless
      }
    }
  }
}
