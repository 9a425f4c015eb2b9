// The RabbitMQ Java client logging in with EXTERNAL over AMQPS: its client certificate is the
// credential (Warren's --ssl-cert-login-from, RabbitMQ's rabbitmq_auth_mechanism_ssl).
// Usage: WarrenJavaExternal TLS_PORT CLIENT_P12 TRUST_P12 PASSWORD
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultSaslConfig;
import com.rabbitmq.client.GetResponse;
import java.io.FileInputStream;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class WarrenJavaExternal {
    public static void main(String[] args) throws Exception {
        char[] password = args[3].toCharArray();
        KeyStore keys = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[1])) {
            keys.load(in, password);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, password);
        KeyStore trust = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[2])) {
            trust.load(in, password);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        ConnectionFactory factory = new ConnectionFactory();
        factory.setHost("127.0.0.1");
        factory.setPort(Integer.parseInt(args[0]));
        factory.useSslProtocol(tls);
        factory.setSaslConfig(DefaultSaslConfig.EXTERNAL);
        try (Connection conn = factory.newConnection()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare("", false, true, true, null).getQueue();
            ch.basicPublish("", q, null, "by certificate".getBytes(StandardCharsets.UTF_8));
            GetResponse got = null;
            for (int i = 0; i < 50 && got == null; i++) {
                got = ch.basicGet(q, true);
                if (got == null) {
                    Thread.sleep(20);
                }
            }
            if (got == null || !"by certificate".equals(new String(got.getBody(), StandardCharsets.UTF_8))) {
                throw new AssertionError("message not round-tripped: " + got);
            }
        }
        System.out.println("ok external");
    }
}
