package replicator.distcp;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.security.Credentials;
import org.apache.hadoop.tools.CopyListing;
import org.apache.hadoop.tools.CopyListingFileStatus;
import org.apache.hadoop.tools.DistCpContext;
import org.apache.hadoop.tools.DistCpOptions.FileAttribute;
import org.apache.hadoop.tools.util.DistCpUtils;

/**
 * A DistCp copy listing of exactly the files the replicator planned.
 *
 * <p>DistCp's own {@code -f} listing (FileBasedCopyListing) globs every line and roots each
 * file at its parent directory, so {@code a/b/x} lands as {@code target/x}. This listing reads
 * the same {@code -f} file, one percent-encoded absolute URI per line (so any name, newlines
 * included, survives), and keys each file by its path relative to
 * {@code replicator.distcp.source.root}, so DistCp's mapper and committer write
 * {@code target/a/b/x}. A line whose file no longer exists is reported on stderr as
 * {@code REPLICATOR-MISSING <uri>} and left out instead of failing the whole job.
 * Statuses are fetched in parallel, one listStatus per directory where several of its
 * files are wanted.
 */
public class ReplicatorCopyListing extends CopyListing {
  public static final String SOURCE_ROOT = "replicator.distcp.source.root";
  public static final String THREADS = "replicator.distcp.listing.threads";

  private long totalBytes;
  private long totalPaths;

  public ReplicatorCopyListing(Configuration conf, Credentials credentials) {
    super(conf, credentials);
  }

  @Override
  protected void validatePaths(DistCpContext context) throws IOException {
    if (context.getSourceFileListing() == null) {
      throw new IOException("ReplicatorCopyListing needs -f <listing>");
    }
    if (getConf().get(SOURCE_ROOT) == null) {
      throw new IOException(SOURCE_ROOT + " is not set");
    }
  }

  private static Path parse(String line) throws IOException {
    try {
      return new Path(new URI(line));
    } catch (URISyntaxException e) {
      throw new IOException("bad URI in listing: " + line, e);
    }
  }

  private List<Path> readListing(Path listing) throws IOException {
    List<Path> out = new ArrayList<>();
    FileSystem fs = listing.getFileSystem(getConf());
    try (BufferedReader in = new BufferedReader(
        new InputStreamReader(fs.open(listing), StandardCharsets.UTF_8))) {
      String line;
      while ((line = in.readLine()) != null) {
        if (!line.isEmpty()) {
          out.add(parse(line));
        }
      }
    }
    return out;
  }

  @Override
  protected void doBuildListing(Path pathToListFile, DistCpContext context) throws IOException {
    Configuration conf = getConf();
    Path root = parse(conf.get(SOURCE_ROOT));
    List<Path> wanted = readListing(context.getSourceFileListing());
    Map<Path, List<Path>> byParent = new LinkedHashMap<>();
    for (Path p : wanted) {
      byParent.computeIfAbsent(p.getParent(), k -> new ArrayList<>()).add(p);
    }
    boolean acls = context.shouldPreserve(FileAttribute.ACL);
    boolean xattrs = context.shouldPreserve(FileAttribute.XATTR);
    boolean raw = context.shouldPreserveRawXattrs();
    int threads = Math.max(1, conf.getInt(THREADS, 8));
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    List<Future<List<FileStatus>>> parts = new ArrayList<>();
    for (Map.Entry<Path, List<Path>> e : byParent.entrySet()) {
      final Path parent = e.getKey();
      final List<Path> files = e.getValue();
      parts.add(pool.submit(() -> statuses(parent, files)));
    }
    pathToListFile.getFileSystem(conf).delete(pathToListFile, false);
    try (SequenceFile.Writer writer = SequenceFile.createWriter(conf,
        SequenceFile.Writer.file(pathToListFile),
        SequenceFile.Writer.keyClass(Text.class),
        SequenceFile.Writer.valueClass(CopyListingFileStatus.class),
        SequenceFile.Writer.compression(SequenceFile.CompressionType.NONE))) {
      for (Future<List<FileStatus>> f : parts) {
        for (FileStatus st : f.get()) {
          FileSystem srcFs = st.getPath().getFileSystem(conf);
          for (CopyListingFileStatus c : DistCpUtils.toCopyListingFileStatus(
              srcFs, st, acls, xattrs, raw, context.getBlocksPerChunk())) {
            writer.append(getFileListingKey(root,
                c), getFileListingValue(c));
            totalBytes += c.getSizeToCopy();
            totalPaths++;
          }
        }
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException(e);
    } catch (java.util.concurrent.ExecutionException e) {
      Throwable cause = e.getCause();
      if (cause instanceof IOException) {
        throw (IOException) cause;
      }
      throw new IOException(cause);
    } finally {
      pool.shutdownNow();
    }
  }

  private List<FileStatus> statuses(Path parent, List<Path> files) throws IOException {
    FileSystem fs = parent.getFileSystem(getConf());
    List<FileStatus> out = new ArrayList<>();
    if (files.size() >= 4) {
      Map<String, FileStatus> listed = new HashMap<>();
      try {
        for (FileStatus st : fs.listStatus(parent)) {
          listed.put(st.getPath().getName(), st);
        }
      } catch (java.io.FileNotFoundException e) {
        // the whole directory is gone: every file below is missing
      }
      for (Path p : files) {
        FileStatus st = listed.get(p.getName());
        if (st == null || st.isDirectory()) {
          missing(p);
        } else {
          out.add(st);
        }
      }
      return out;
    }
    for (Path p : files) {
      try {
        FileStatus st = fs.getFileStatus(p);
        if (st.isDirectory()) {
          missing(p);
        } else {
          out.add(st);
        }
      } catch (java.io.FileNotFoundException e) {
        missing(p);
      }
    }
    return out;
  }

  private static synchronized void missing(Path p) {
    System.err.println("REPLICATOR-MISSING " + p.toUri().toASCIIString());
  }

  @Override
  protected long getBytesToCopy() {
    return totalBytes;
  }

  @Override
  protected long getNumberOfPaths() {
    return totalPaths;
  }
}
