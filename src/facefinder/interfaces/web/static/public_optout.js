// The public opt-out form: sends the photo as the request body and says what came of it.
document.getElementById('optout').addEventListener('submit', async (event) => {
  event.preventDefault();
  const file = document.getElementById('photo').files[0];
  const out = document.getElementById('result');
  const button = event.target.querySelector('button');
  if (!file) return;
  out.className = ''; out.textContent = 'Sending...'; button.disabled = true;
  try {
    const response = await fetch('/api/privacy/public/optout', {method: 'POST', body: file,
      headers: {'Content-Type': file.type || 'application/octet-stream'}});
    const body = await response.json().catch(() => null);
    if (response.ok) { out.textContent = body.message + ' Your reference: ' + body.reference; return; }
    const error = (body && body.error) || {code: 'HTTP ' + response.status, message: 'the server could not take the photo'};
    out.className = 'error';
    out.textContent = 'Not sent: ' + error.message + '. ' +
      (response.status === 429 ? 'Too many tries from here: wait an hour, then try again. ' : 'Try again, or with another photo. ') +
      '(Error code: ' + error.code + ')';
  } catch (e) {
    out.className = 'error'; out.textContent = 'Not sent: the server could not be reached. Check your connection and try again.';
  } finally { button.disabled = false; }
});
