// A plain Java producer, as a Java team would write one: the Kafka client's own default
// partitioner (murmur2 of the key), JSON values. Reads "<key>\t<json>" lines from stdin,
// publishes each to the topic, waits for every acknowledgement, prints how many. The
// connection (bootstrap.servers and the security settings) comes from a standard client
// properties file.
//
//   java -cp <classes>:<kafka libs>/* JsonProducer <client.properties> <topic>

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.StringSerializer;

public final class JsonProducer {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        try (FileInputStream file = new FileInputStream(args[0])) {
            properties.load(file);
        }
        properties.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        properties.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        properties.put(ProducerConfig.ACKS_CONFIG, "all");
        properties.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(properties);
             BufferedReader input = new BufferedReader(
                 new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = input.readLine()) != null) {
                String[] parts = line.split("\t", 2);
                ProducerRecord<String, String> record = new ProducerRecord<>(args[1], parts[0], parts[1]);
                record.headers().add(new RecordHeader(
                    "content-type", "application/json".getBytes(StandardCharsets.UTF_8)));
                sent.add(producer.send(record));
            }
            producer.flush();
            for (Future<RecordMetadata> delivery : sent) {
                delivery.get();
            }
        }
        System.out.println("published " + sent.size());
    }
}
