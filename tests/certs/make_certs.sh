#!/bin/sh
# Regenerates the test-only certificates (a CA, a server and a client
# certificate signed by it, EC P-256, valid 100 years). Never use them
# outside the tests: the private keys are public.
set -e
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
    -subj "/CN=fastcore test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=fastcore test $who" -keyout $who.key -out $who.csr
done
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" > server.ext
printf "extendedKeyUsage=clientAuth\n" > client.ext
for who in server client; do
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
        -extfile $who.ext -out $who.crt
    cat $who.crt $who.key > $who.pem
    rm $who.csr $who.ext $who.crt $who.key
done
rm -f ca.key ca.srl
