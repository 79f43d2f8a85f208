#!/bin/sh
# One Kafka node of the compose cluster: broker and KRaft controller in one JVM, like the
# local stack's broker (deploy/local/kafka_broker.py), three of them.
#
# Every listener is SASL_SSL with the cluster's certificate (/run/secrets). Clients and
# the brokers themselves authenticate with SCRAM-SHA-512; the users (admin, worker,
# upstream, risk) are made when the storage is formatted, the first time only. The
# controllers' listener takes SASL/PLAIN with one user, admin (SCRAM credentials live in
# the metadata the controllers serve). StandardAuthorizer: admin is the only super user,
# `smallcups init` grants the other roles their ACLs.
#
# Passwords never go on a command line: the configuration is written here (mode 0600) and
# the format's arguments go in a java @file that is removed after.
set -eu

: "${KAFKA_NODE_ID:?}" "${KAFKA_CLUSTER_ID:?}" "${KAFKA_EXTERNAL_PORT:?}"
secrets=/run/secrets
data=/var/lib/kafka/data
work=/tmp/smallcups-kafka
config=$work/server.properties
client=$work/client.properties
scram=SCRAM-SHA-512
scram_module=org.apache.kafka.common.security.scram.ScramLoginModule
plain_module=org.apache.kafka.common.security.plain.PlainLoginModule

secret() { tr -d '\n' < "$secrets/$1"; }

umask 077
mkdir -p "$work"
admin=$(secret kafka-admin)
keystore_password=$(secret kafka-keystore-password)

cat > "$config" <<PROPERTIES
process.roles=broker,controller
node.id=$KAFKA_NODE_ID
controller.quorum.voters=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093
listeners=BROKER://:9092,CONTROLLER://:9093,EXTERNAL://:$KAFKA_EXTERNAL_PORT
advertised.listeners=BROKER://kafka-$KAFKA_NODE_ID:9092,EXTERNAL://localhost:$KAFKA_EXTERNAL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=BROKER
listener.security.protocol.map=BROKER:SASL_SSL,CONTROLLER:SASL_SSL,EXTERNAL:SASL_SSL
sasl.enabled.mechanisms=$scram
sasl.mechanism.inter.broker.protocol=$scram
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=$plain_module required username="admin" password="$admin" user_admin="$admin";
listener.name.broker.scram-sha-512.sasl.jaas.config=$scram_module required username="admin" password="$admin";
listener.name.external.scram-sha-512.sasl.jaas.config=$scram_module required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$secrets/kafka-keystore.p12
ssl.keystore.password=$keystore_password
ssl.truststore.type=PEM
ssl.truststore.location=$secrets/ca.pem
ssl.endpoint.identification.algorithm=https
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=$data
num.partitions=1
auto.create.topics.enable=false
unclean.leader.election.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
PROPERTIES

# The health check's client (kafka-broker-api-versions.sh as admin).
cat > "$client" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=$scram
sasl.jaas.config=$scram_module required username="admin" password="$admin";
ssl.truststore.type=PEM
ssl.truststore.location=$secrets/ca.pem
PROPERTIES

if [ ! -f "$data/meta.properties" ]; then
    arguments=$work/format.args
    {
        printf '"%s"\n' kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$config"
        for user in admin worker upstream risk; do
            password=$(secret "kafka-$user")
            printf '"--add-scram"\n"%s=[name=%s,iterations=8192,password=%s]"\n' \
                "$scram" "$user" "$password"
        done
    } > "$arguments"
    status=0
    java -cp '/opt/kafka/libs/*' "@$arguments" || status=$?
    rm -f "$arguments"
    [ "$status" -eq 0 ] || exit "$status"
fi

exec /opt/kafka/bin/kafka-server-start.sh "$config"
