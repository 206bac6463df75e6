// Copies the Remote UI's templates and static files next to the compiled JavaScript (dist/web).
import { cpSync } from 'node:fs';

for (const dir of ['views', 'public']) {
  cpSync(new URL(`../src/web/${dir}`, import.meta.url), new URL(`../dist/web/${dir}`, import.meta.url), { recursive: true });
}
