// Runs Apache Iceberg's REST catalog fixture (org.apache.iceberg.rest.RESTCatalogServer from the
// iceberg-open-api test-fixtures jar) bound to one host address instead of every interface.
//
// Why this exists: RESTCatalogServer.start() builds `new org.eclipse.jetty.server.Server(port)`,
// which listens on 0.0.0.0 with SO_REUSEPORT and has no host setting. The local stack must listen
// on loopback only, so this launcher performs the same steps as start() (backend catalog from the
// CATALOG_* environment, RESTServerCatalogAdapter, RESTCatalogServlet, gzip handler) but gives the
// Jetty connector a host. The fixture's classes are package-private, hence the reflection; the
// sequence mirrors the pinned Iceberg version in pom.xml and must be re-checked when bumping it.
//
// Run in source-file mode (no build step):
//   java -cp '<iceberg-rest lib>/*' LoopbackRestCatalog.java <host> <port>
// Configuration is the fixture's own: CATALOG_<KEY> environment variables ('__' -> '-', '_' -> '.').

import java.lang.reflect.Constructor;
import java.lang.reflect.Method;
import org.apache.iceberg.rest.RESTCatalogAdapter;
import org.apache.iceberg.rest.RESTCatalogServlet;
import org.eclipse.jetty.compression.gzip.GzipCompression;
import org.eclipse.jetty.compression.server.CompressionHandler;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public class LoopbackRestCatalog {
  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: LoopbackRestCatalog <host> <port>");
      System.exit(2);
    }
    String host = args[0];
    int port = Integer.parseInt(args[1]);

    Class<?> serverClass = Class.forName("org.apache.iceberg.rest.RESTCatalogServer");
    Constructor<?> serverCtor = serverClass.getDeclaredConstructor();
    serverCtor.setAccessible(true);
    Object fixture = serverCtor.newInstance();

    // Reads CATALOG_* and applies the fixture's defaults (JdbcCatalog, jdbc.schema-version=V1, ...).
    Method init = serverClass.getDeclaredMethod("initializeBackendCatalog");
    init.setAccessible(true);
    Object catalogContext = init.invoke(fixture);

    Class<?> contextClass = Class.forName("org.apache.iceberg.rest.RESTCatalogServer$CatalogContext");
    Class<?> adapterClass = Class.forName("org.apache.iceberg.rest.RESTServerCatalogAdapter");
    Constructor<?> adapterCtor = adapterClass.getDeclaredConstructor(contextClass);
    adapterCtor.setAccessible(true);
    RESTCatalogAdapter adapter = (RESTCatalogAdapter) adapterCtor.newInstance(catalogContext);

    ServletContextHandler context = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    context.addServlet(new ServletHolder(new RESTCatalogServlet(adapter)), "/*");
    CompressionHandler compression = new CompressionHandler();
    compression.putCompression(new GzipCompression());
    context.insertHandler(compression);

    Server http = new Server();
    ServerConnector connector = new ServerConnector(http);
    connector.setHost(host);
    connector.setPort(port);
    http.addConnector(connector);
    http.setHandler(context);
    http.setStopAtShutdown(true); // SIGTERM from `stack.sh down` closes the listener cleanly
    http.start();
    System.out.println("REST catalog listening on http://" + host + ":" + port);
    http.join();
  }
}
