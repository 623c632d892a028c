#!/usr/bin/env bash
# Regenerate the two static Hebrew prompts Twilio <Play>s. Needs Debian's espeak-ng and lame:
#   apt-get install espeak-ng lame
# The MP3s are committed, so running the service never needs these tools.
set -euo pipefail
cd "$(dirname "$0")/.."
out=static/tts
mkdir -p "$out"
speak() {  # speak <file.mp3> <hebrew text>
  local wav
  wav=$(mktemp --suffix=.wav)
  espeak-ng -v he -s 150 -w "$wav" "$2"
  # 8 kHz mono is what a phone call carries; 32 kbps keeps the files small.
  lame --quiet -m m --resample 8 -b 32 "$wav" "$1"
  rm -f "$wav"
}
speak "$out/greeting_he.mp3" "שלום, הגעתם לעוזר הדיגיטלי של העסק. רגע אחד בבקשה."
speak "$out/fallback_he.mp3" "סליחה, אני לא יכול לענות כרגע. אנא השאירו הודעה אחרי הצליל, ונחזור אליכם בהקדם."
ls -l "$out"
