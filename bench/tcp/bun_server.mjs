// An idiomatic Bun TIME server (Bun.listen), the runtime to beat for idle connections: `bun bench/bun_server.mjs PORT`.

const port = Number(Bun.argv[2] ?? 45000);
const two = (n) => String(n).padStart(2, "0");

Bun.listen({
  hostname: "127.0.0.1",
  port,
  socket: {
    open(socket) {
      socket.data = "";
    },
    data(socket, bytes) {
      const lines = (socket.data + bytes.toString()).split("\n");
      socket.data = lines.pop();
      let out = "";
      for (const raw of lines) {
        const word = raw.trim().split(/\s+/)[0].toUpperCase();
        if (word === "TIME") {
          const now = new Date();
          out += `JAM ${two(now.getHours())}:${two(now.getMinutes())}:${two(now.getSeconds())}\r\n`;
        } else if (word === "QUIT") {
          if (out) socket.write(out);
          socket.end();
          return;
        } else if (word !== "") out += "ERR unknown command\r\n";
      }
      if (out) socket.write(out);
    },
  },
});
console.log(`listening on ${port}`);
