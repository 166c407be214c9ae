document.getElementById('optout').addEventListener('submit', async (event) => {
  event.preventDefault();
  const file = document.getElementById('photo').files[0];
  const out = document.getElementById('result');
  if (!file) return;
  out.textContent = 'Sending...';
  const response = await fetch('/api/privacy/public/optout', {method: 'POST', body: file,
    headers: {'Content-Type': file.type || 'application/octet-stream'}});
  const body = await response.json();
  out.textContent = response.ok ? body.message + ' Your reference: ' + body.reference : body.error.message;
});
