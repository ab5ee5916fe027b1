// A real HDFS for tests and demos: MiniDFSCluster (NameNode + DataNodes + WebHDFS in one JVM)
// on 127.0.0.1, started by scripts/hadoop.py. Not a test double: the NameNode, DataNode and
// WebHDFS code are Hadoop's own, from hadoop-client-minicluster.
//
//   java HdfsLauncher BASE_DIR NN_RPC_PORT NN_HTTP_PORT NUM_DATANODES [WATCH_PID]
//
// With WATCH_PID (a test session) the cluster shuts down when that process is gone, so a
// killed test run leaves no JVM behind.
//
// Once the cluster serves requests it writes BASE_DIR/ready.json (ports, pid, control port).
// Control channel: one line per TCP connection to 127.0.0.1:<control port>, one line back
// ("ok ..." or "error ..."):
//   ping | stop-namenode | restart-namenode | stop-datanode N | restart-datanode N
//   allow-snapshot PATH | disallow-snapshot PATH | checksum PATH | shutdown
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public class HdfsLauncher {
    private static MiniDFSCluster cluster;
    private static final Map<Integer, MiniDFSCluster.DataNodeProperties> stopped = new HashMap<>();
    private static volatile boolean running = true;
    private static String[] addrs;

    public static void main(String[] args) throws Exception {
        File base = new File(args[0]).getAbsoluteFile();
        int rpcPort = Integer.parseInt(args[1]);
        int httpPort = Integer.parseInt(args[2]);
        int dataNodes = Integer.parseInt(args[3]);
        long watch = args.length > 4 ? Long.parseLong(args[4]) : 0;
        File data = new File(base, "data");
        boolean format = !new File(data, "name-0-1/current").exists();

        System.setProperty("test.build.data", data.getPath());
        System.setProperty("hadoop.home.dir", base.getPath());
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, data.getPath());
        conf.set("hadoop.tmp.dir", new File(base, "tmp").getPath());
        // Cross-scheme verification: the file checksum is the CRC32C of the whole file.
        conf.set("dfs.checksum.combine.mode", "COMPOSITE_CRC");
        conf.set("dfs.checksum.type", "CRC32C");
        conf.setBoolean("dfs.webhdfs.enabled", true);
        conf.setBoolean("dfs.permissions.enabled", true);
        conf.setBoolean("dfs.namenode.acls.enabled", true);
        conf.setBoolean("dfs.namenode.xattrs.enabled", true);
        conf.set("dfs.namenode.rpc-address", "127.0.0.1:" + rpcPort);
        conf.set("dfs.namenode.http-address", "127.0.0.1:" + httpPort);
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        // Small blocks are allowed (tests write files of several 1 MiB blocks).
        conf.setLong("dfs.namenode.fs-limits.min-block-size", 1024 * 1024);
        conf.setInt("dfs.replication", Math.min(dataNodes, 3));
        // Quick liveness: a stopped DataNode is noticed in seconds, safe mode ends at once.
        conf.setLong("dfs.heartbeat.interval", 1);
        conf.setInt("dfs.namenode.heartbeat.recheck-interval", 2000);
        conf.setInt("dfs.namenode.safemode.extension", 0);
        // Leases of dead writers are recovered after a minute (default soft limit) - keep it.
        conf.setInt("dfs.client.retry.max.attempts", 1);
        conf.setInt("ipc.client.connect.max.retries", 1);
        conf.setInt("ipc.client.connect.max.retries.on.timeouts", 1);
        // Extra keys for one cluster (e.g. a small dfs.ls.limit so listings page):
        // BASE/conf.properties, written by scripts/hadoop.py start --conf KEY=VALUE.
        File extra = new File(base, "conf.properties");
        if (extra.exists()) {
            Properties props = new Properties();
            try (java.io.Reader r = Files.newBufferedReader(extra.toPath(), StandardCharsets.UTF_8)) {
                props.load(r);
            }
            for (String key : props.stringPropertyNames()) {
                conf.set(key, props.getProperty(key));
            }
        }

        cluster = new MiniDFSCluster.Builder(conf)
                .nameNodePort(rpcPort)
                .nameNodeHttpPort(httpPort)
                .numDataNodes(dataNodes)
                .format(format)
                .manageNameDfsDirs(true)
                .manageDataDfsDirs(true)
                .checkDataNodeHostConfig(true)
                .build();
        cluster.waitActive();
        addrs = new String[dataNodes];
        for (int i = 0; i < dataNodes; i++) {
            addrs[i] = cluster.getDataNodes().get(i).getDatanodeId().getXferAddr();
        }

        ServerSocket control = new ServerSocket(0, 16, InetAddress.getByName("127.0.0.1"));
        long pid = ProcessHandle.current().pid();
        String ready = String.format(
                "{\"hdfs\": \"hdfs://127.0.0.1:%d\", \"webhdfs\": \"http://127.0.0.1:%d\", "
                        + "\"pid\": %d, \"control_port\": %d, \"datanodes\": %d}\n",
                rpcPort, httpPort, pid, control.getLocalPort(), dataNodes);
        File tmp = new File(base, "ready.json.tmp");
        Files.write(tmp.toPath(), ready.getBytes(StandardCharsets.UTF_8));
        Files.move(tmp.toPath(), new File(base, "ready.json").toPath(),
                StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        System.out.println("ready " + ready.trim());
        System.out.flush();

        Runtime.getRuntime().addShutdownHook(new Thread(HdfsLauncher::shutdownCluster));
        if (watch > 0) {
            Thread watcher = new Thread(() -> {
                while (ProcessHandle.of(watch).map(ProcessHandle::isAlive).orElse(false)) {
                    try {
                        Thread.sleep(1000);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                System.err.println("watched process " + watch + " is gone: shutting down");
                System.exit(0);
            });
            watcher.setDaemon(true);
            watcher.start();
        }
        while (running) {
            try (Socket s = control.accept()) {
                BufferedReader in = new BufferedReader(
                        new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
                PrintWriter out = new PrintWriter(
                        new OutputStreamWriter(s.getOutputStream(), StandardCharsets.UTF_8), true);
                String line = in.readLine();
                String reply;
                try {
                    reply = handle(line == null ? "" : line.trim());
                } catch (Exception e) {
                    reply = "error " + e.getClass().getSimpleName() + ": "
                            + String.valueOf(e.getMessage()).split("\n", 2)[0];
                }
                out.println(reply);
            } catch (Exception e) {
                System.err.println("control: " + e);
            }
        }
        control.close();
        shutdownCluster();
        System.exit(0);
    }

    private static synchronized void shutdownCluster() {
        if (cluster != null) {
            try {
                cluster.shutdown(true);
            } catch (Exception e) {
                System.err.println("shutdown: " + e);
            }
            cluster = null;
        }
    }

    private static synchronized String handle(String line) throws Exception {
        String[] w = line.split(" ", 2);
        String arg = w.length > 1 ? w[1].trim() : "";
        switch (w[0]) {
            case "ping":
                return "ok";
            case "stop-namenode":
                cluster.shutdownNameNode(0);
                return "ok";
            case "restart-namenode":
                cluster.restartNameNode(0, true);
                cluster.waitActive();
                return "ok";
            case "stop-datanode": {
                int i = Integer.parseInt(arg);
                if (stopped.containsKey(i)) {
                    return "ok already stopped";
                }
                // By the address it started with: indexes stay stable across restarts.
                MiniDFSCluster.DataNodeProperties props = cluster.stopDataNode(addrs[i]);
                if (props == null) {
                    return "error no datanode " + i;
                }
                stopped.put(i, props);
                return "ok";
            }
            case "restart-datanode": {
                int i = Integer.parseInt(arg);
                MiniDFSCluster.DataNodeProperties props = stopped.remove(i);
                if (props == null) {
                    return "error datanode " + i + " is not stopped";
                }
                cluster.restartDataNode(props, true);
                cluster.waitActive();
                return "ok";
            }
            case "allow-snapshot":
                fs().allowSnapshot(new Path(arg));
                return "ok";
            case "disallow-snapshot":
                fs().disallowSnapshot(new Path(arg));
                return "ok";
            case "checksum": {
                // The cluster's own file checksum (COMPOSITE_CRC/CRC32C as configured above).
                org.apache.hadoop.fs.FileChecksum c = fs().getFileChecksum(new Path(arg));
                StringBuilder hex = new StringBuilder();
                for (byte b : c.getBytes()) {
                    hex.append(String.format("%02x", b));
                }
                return "ok " + c.getAlgorithmName() + " " + hex;
            }
            case "shutdown":
                running = false;
                return "ok";
            default:
                return "error unknown command: " + line;
        }
    }

    private static DistributedFileSystem fs() throws Exception {
        return cluster.getFileSystem();
    }
}
